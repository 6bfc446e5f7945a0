#pragma once
// The operator console on a scratch database, driven through console::handle (the function the
// admin server's routes call) on a real io_context and DB thread pool, with an operator "alice"
// signed in on demand; for the console's tests and the providers' console pages' tests.
#include <catch2/catch.hpp>

#include <functional>
#include <future>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <pqxx/pqxx>

#include "console/auth.hpp"
#include "console/console.hpp"
#include "queue/queue.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

namespace bankworker::test {

namespace asio = boost::asio;

inline constexpr std::string_view operator_password = "a long operator password";

inline std::string header_of(const service::http_response& response, std::string_view name, std::string_view starting = {}) {
  for (const auto& [key, value] : response.headers) {
    if (service::equal_ignoring_case(key, name) && value.starts_with(starting)) return value;
  }
  return {};
}

// The value of the hidden input `name` in a page.
inline std::string hidden_value(const std::string& body, std::string_view name) {
  const std::string anchor = "name=\"" + std::string(name) + "\" value=\"";
  const std::size_t at = body.find(anchor);
  if (at == std::string::npos) return {};
  const std::size_t start = at + anchor.size();
  return body.substr(start, body.find('"', start) - start);
}

struct console_fixture {
  scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool(std::size_t{4});
  std::unique_ptr<db::key_store> keys = test_key_store();
  queue::job_queue jobs{*connections, {}};
  asio::thread_pool blocking{2};
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread io_thread{[this] { io.run(); }};
  console::console site;

  // `pages` makes the providers' pages on the fixture's pool (which exists only from here on).
  using pages_function = std::function<std::vector<service::admin_page>(db::pool&)>;
  explicit console_fixture(console::console_settings settings = {}, const pages_function& pages = {})
      : site({blocking, *connections, *keys, jobs}, settings,
             pages ? pages(*connections) : std::vector<service::admin_page>{}) {
    add_operator("alice");
  }
  ~console_fixture() {
    guard.reset();
    io.stop();
    io_thread.join();
    blocking.join();
  }

  void add_operator(std::string_view name) {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    console::add_operator(tx, name, console::hash_password(crypto::secret::copy_of(operator_password),
                                                           console::minimum_password_cost()));
    tx.commit();
  }

  service::http_response call(std::string method, std::string target, std::string cookie = {}, std::string body = {},
                              std::string address = "127.0.0.1") {
    service::http_request request;
    request.method = std::move(method);
    request.path = target.substr(0, target.find('?'));
    request.target = std::move(target);
    request.body = std::move(body);
    request.remote_address = std::move(address);
    if (!cookie.empty()) request.headers.emplace_back("Cookie", cookie);
    return asio::co_spawn(io, site.handle(std::move(request)), asio::use_future).get();
  }

  // Signs in; returns the response of the POST (303 with the session cookie on success).
  service::http_response sign_in(std::string_view name, std::string_view password, std::string address = "127.0.0.1") {
    const auto form = call("GET", "/console/login", {}, {}, address);
    const std::string token = hidden_value(form.body, "login_token");
    return call("POST", "/console/login", "bw_console_login=" + token,
                "login_token=" + token + "&name=" + std::string(name) + "&password=" + service::url_encode(password),
                address);
  }

  // A signed-in operator's cookie header value.
  std::string session_cookie(std::string_view name = "alice") {
    const auto answer = sign_in(name, operator_password);
    REQUIRE(answer.status == 303);
    const std::string set = header_of(answer, "Set-Cookie", "bw_console=");
    REQUIRE(!set.empty());
    return set.substr(0, set.find(';'));
  }

  std::int64_t dead_job(const core::uuid& tenant) {
    queue::new_job job;
    job.tenant = tenant;
    job.kind = "plaid.sync";
    job.payload_json = R"({"access_token":"access-sandbox-00000000-0000-0000-0000-000000000001"})";
    const auto ids = jobs.enqueue(std::vector<queue::new_job>{job});
    REQUIRE(ids.size() == 1);
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("UPDATE bankworker.jobs SET state = 'failed', attempt = attempts_max, finished_at = now(),"
                    " failure = 'attempts_exhausted', last_error = 'HTTP 500 <b>from provider</b>' WHERE job_id = $1",
                    ids[0]);
    tx.commit();
    return ids[0];
  }

  std::string job_state(std::int64_t id) { return std::string(queue::to_string(jobs.details(id)->summary.state)); }

  // The tenant's audit rows written by the console: "actor action subject" each, in order.
  std::vector<std::string> console_audit_rows(const core::uuid& tenant) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    std::vector<std::string> rows;
    for (const auto& row : tx.exec_params("SELECT actor || ' ' || action || ' ' || subject FROM bankworker.audit_log"
                                          " WHERE tenant_id = $1 AND actor LIKE 'operator:%' ORDER BY seq",
                                          tenant.to_string())) {
      rows.push_back(row[0].as<std::string>());
    }
    return rows;
  }
};

}  // namespace bankworker::test
