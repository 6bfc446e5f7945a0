#include "bench/webhook_events.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <pqxx/pqxx>

#include "bench/bench_support.hpp"
#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/logins.hpp"
#include "tests/support/process.hpp"

namespace bankworker::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

constexpr std::chrono::seconds request_timeout{10};
constexpr std::chrono::seconds ready_timeout{60};
constexpr auto as_result = asio::as_tuple(asio::use_awaitable);

}  // namespace

event_set::event_set(std::size_t count, std::size_t forged_percent, std::string_view secret, std::int64_t timestamp_s)
    : timestamp_s_(timestamp_s) {
  prefix_ = R"({"object":"event","api_version":"2024-06-20","created":)" + std::to_string(timestamp_s) +
            R"(,"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},)"
            R"("type":"payment_intent.succeeded","data":{"object":{"object":"payment_intent","amount":2000,)"
            R"("amount_capturable":0,"amount_details":{"tip":{}},"amount_received":2000,"application":null,)"
            R"("application_fee_amount":null,"automatic_payment_methods":{"allow_redirects":"always","enabled":true},)"
            R"("canceled_at":null,"cancellation_reason":null,"capture_method":"automatic",)"
            R"("confirmation_method":"automatic","created":)" +
            std::to_string(timestamp_s) +
            R"(,"currency":"usd","customer":null,"invoice":null,"last_payment_error":null,"livemode":false,)"
            R"("metadata":{"order_id":"6735","channel":"web"},"next_action":null,"on_behalf_of":null,)"
            R"("payment_method":"pm_1QkX2bLkdIwHu7ix0abcdEFG","payment_method_configuration_details":null,)"
            R"("payment_method_options":{"card":{"installments":null,"mandate_options":null,"network":null,)"
            R"("request_three_d_secure":"automatic"}},"payment_method_types":["card"],"processing":null,)"
            R"("receipt_email":null,"review":null,"setup_future_usage":null,"shipping":null,"source":null,)"
            R"("statement_descriptor":null,"statement_descriptor_suffix":null,"status":"succeeded",)"
            R"("transfer_data":null,"transfer_group":null,"description":")";
  // The description pads the body to body_bytes; the tail starts at the next field.
  const std::size_t tail_size = tail_of(0, false).size();
  constexpr std::string_view description_end = "\",";
  if (prefix_.size() + description_end.size() + tail_size > body_bytes) throw std::logic_error("event prefix too long");
  prefix_.append(body_bytes - prefix_.size() - description_end.size() - tail_size, 'x');
  prefix_ += description_end;
  tail_bytes_ = tail_size;

  tails_.reserve(count * tail_bytes_);
  signatures_.reserve(count * signature_hex_bytes);
  forged_.reserve(count);
  std::string body = prefix_;
  for (std::size_t i = 0; i < count; ++i) {
    const bool forged = forged_percent > 0 && i % 100 < forged_percent;
    const std::string tail = tail_of(i, forged);
    body.resize(prefix_.size());
    body += tail;
    const std::string header =
        sim::stripe::simulator::sign(body, forged ? std::string_view("whsec_forged_by_webhook_load") : secret,
                                     timestamp_s);
    tails_ += tail;
    signatures_.append(header, header.size() - signature_hex_bytes, signature_hex_bytes);
    forged_.push_back(forged);
    forged_count_ += forged ? 1 : 0;
  }
}

std::string event_set::tail_of(std::size_t i, bool forged) {
  char tail[160];
  std::snprintf(tail, sizeof tail,
                R"("id":"pi_wl%014zu","latest_charge":"ch_wl%014zu"}},"id":"evt_wl%c%014zu"})", i, i,
                forged ? 'f' : 'v', i);
  return tail;
}

namespace {

// One server the load goes to: its address and the request head naming it.
struct load_target {
  tcp::endpoint server;
  std::string head_before_signature;  // request line and headers up to "v1="
};

struct load_state {
  const event_set& events;
  std::vector<load_target> targets;
  std::string after_signature;  // "\r\n\r\n" and the shared body prefix
  steady::time_point deadline;
  std::size_t next = 0;  // the io_context runs on one thread: no atomics needed
  load_result result;
};

// One keep-alive connection to `target` sending events one at a time until the deadline. `state`
// and `target` outlive the io_context run.
asio::awaitable<void> drive(load_state* state, const load_target* target) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  beast::flat_buffer buffer;
  bool connected = false;
  while (steady::now() < state->deadline) {
    if (!connected) {
      stream.expires_after(request_timeout);
      auto [error] = co_await stream.async_connect(target->server, as_result);
      if (error) {
        ++state->result.connection_errors;
        co_return;
      }
      stream.socket().set_option(tcp::no_delay(true));
      buffer.clear();
      connected = true;
    }
    if (state->next >= state->events.size()) {
      state->result.ran_out = true;
      break;
    }
    const std::size_t i = state->next++;
    const std::array<asio::const_buffer, 4> request = {
        asio::buffer(target->head_before_signature), asio::buffer(state->events.signature(i)),
        asio::buffer(state->after_signature), asio::buffer(state->events.tail(i))};
    const auto started = steady::now();
    stream.expires_after(request_timeout);
    auto [write_error, written] = co_await asio::async_write(stream, request, as_result);
    http::response<http::string_body> response;
    beast::error_code read_error;
    if (!write_error) {
      auto [error, read] = co_await http::async_read(stream, buffer, response, as_result);
      read_error = error;
    }
    ++state->result.sent;
    if (write_error || read_error) {
      ++state->result.connection_errors;
      beast::error_code ignored;
      stream.socket().close(ignored);
      connected = false;
      continue;
    }
    const unsigned status = response.result_int();
    ++state->result.statuses[status];
    if (state->events.forged(i)) {
      (status == 400 ? state->result.forged_rejected : state->result.forged_accepted) += 1;
    } else if (status / 100 == 2) {
      ++state->result.accepted;
      state->result.latencies_us.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - started).count()));
    } else {
      ++state->result.other_status;
    }
    if (!response.keep_alive()) {
      beast::error_code ignored;
      stream.socket().close(ignored);
      connected = false;
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace

load_result run_load(const event_set& events, const std::string& path, const std::vector<std::uint16_t>& ports,
                     std::size_t connections, std::chrono::seconds duration) {
  load_state state{events, {}, "\r\n\r\n" + events.prefix(), {}, 0, {}};
  for (const std::uint16_t port : ports) {
    const std::string host = "127.0.0.1:" + std::to_string(port);
    state.targets.push_back({tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port),
                             "POST " + path + " HTTP/1.1\r\nHost: " + host +
                                 "\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
                                 "Content-Type: application/json; charset=utf-8\r\nContent-Length: " +
                                 std::to_string(events.body_size()) + "\r\nStripe-Signature: t=" +
                                 std::to_string(events.timestamp_s()) + ",v1="});
  }
  state.result.latencies_us.reserve(events.size());
  asio::io_context io(1);
  const auto start = steady::now();
  state.deadline = start + duration;
  for (std::size_t c = 0; c < connections; ++c) {
    asio::co_spawn(io, drive(&state, &state.targets[c % state.targets.size()]), asio::detached);
  }
  io.run();
  state.result.seconds = seconds_since(start);
  return std::move(state.result);
}

bool wait_until_ready(std::uint16_t port, const std::string& path, test::child_process& worker) {
  const auto deadline = steady::now() + ready_timeout;
  while (steady::now() < deadline) {
    if (worker.wait(std::chrono::milliseconds(0))) return false;  // it exited
    try {
      asio::io_context io;
      beast::tcp_stream stream(io);
      stream.expires_after(std::chrono::seconds(2));
      stream.connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port));
      http::request<http::empty_body> request{http::verb::get, path, 11};
      request.set(http::field::host, "127.0.0.1");
      http::write(stream, request);
      beast::flat_buffer buffer;
      http::response<http::string_body> response;
      http::read(stream, buffer, response);
      if (response.result_int() == 200) return true;
    } catch (const std::exception&) {
      // Not listening yet.
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

double percentile_ms(const std::vector<std::uint32_t>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(sorted.size() - 1) + 0.5);
  return static_cast<double>(sorted[std::min(index, sorted.size() - 1)]) / 1000.0;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  randombytes_buf(raw.data(), raw.size());
  std::string hex(2 * bytes + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), raw.data(), raw.size());
  hex.pop_back();
  return hex;
}

void write_private_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::replace);
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}


event_set sign_events(std::size_t count, std::size_t forged_percent, std::string_view secret) {
  const auto signing_start = steady::now();
  const std::int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  event_set events(count, forged_percent, secret, now_s);
  const double signing_s = seconds_since(signing_start);
  std::printf("signed %zu events of %zu bytes (%zu forged) in %.2f s = %.0f signatures/s, before measuring\n",
              events.size(), events.body_size(), events.forged_count(), signing_s,
              static_cast<double>(events.size()) / signing_s);
  return events;
}

worker_setup set_up_worker(const std::string& bankworker, const std::string& bench_url, const std::string& runtime_login,
                           std::map<std::string, std::string> env, const std::string& tenant_name,
                           const std::filesystem::path& secret_file) {
  env["BANKWORKER_DATABASE_URL"] = bench_url;
  // The worker's own migrations, so an older binary (--bankworker) runs on the schema it knows.
  const test::process_result migrated = test::run_process(bankworker, {"migrate"}, env);
  if (migrated.exit_code != 0) throw std::runtime_error("bankworker migrate failed: " + migrated.err);
  // Everything else runs as a runtime login, as a deployment must (README: roles and logins).
  env["BANKWORKER_DATABASE_URL"] = test::create_login(bench_url, bench_url, runtime_login, "bankworker_worker");
  const test::process_result created = test::run_process(bankworker, {"tenant", "create", "--name", tenant_name}, env);
  if (created.exit_code != 0) throw std::runtime_error("tenant create failed: " + created.err);
  const std::string tenant = trimmed(created.out);
  const test::process_result added = test::run_process(
      bankworker, {"stripe", "secret", "add", "--tenant", tenant, "--secret-file", secret_file.string()}, env);
  if (added.exit_code != 0) throw std::runtime_error("stripe secret add failed: " + added.err);
  return {std::move(env), tenant};
}

void drop_login(const std::string& cluster_url, const std::string& login) {
  try {
    pqxx::connection admin(cluster_url);
    pqxx::nontransaction(admin).exec("DROP ROLE IF EXISTS " + admin.quote_name(login));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "could not drop the bench login %s: %s\n", login.c_str(), error.what());
  }
}

}  // namespace bankworker::bench
