// `bankworker run` as a user runs it: the real binary, the real database, the Stripe simulator
// delivering signed events over loopback, then SIGTERM.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <pqxx/pqxx>

#include "core/limits.hpp"
#include "db/migrate.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/plaid_sim.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_http.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/tcp_proxy.hpp"
#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

constexpr const char* webhook_secret = "whsec_run_test_endpoint_secret";

using test::count;
using test::eventually;
using test::metric_value;


std::string file_text(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

std::size_t occurrences(const std::string& text, std::string_view needle) {
  std::size_t found = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++found;
  return found;
}

// A kept-alive GET /healthz on an open connection: its status, 0 when the connection is gone.
int healthz_on(const test::raw_connection& connection) {
  if (!connection.send("GET /healthz HTTP/1.1\r\nHost: worker\r\n\r\n")) return 0;
  return test::status_of(connection.read_response());
}

}  // namespace

TEST_CASE("run refuses a database whose schema is older than the binary", "[pg][run]") {
  const test::scratch_database database(false);
  const test::root_key_file key;
  const auto result = test::run_bankworker({"run"}, {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                     {"BANKWORKER_ROOT_KEY_FILE", key.path_text()}});
  CHECK(result.exit_code == 1);
  CHECK_THAT(result.err, Catch::Contains("bankworker migrate"));
}

TEST_CASE("run refuses a schema migrated only partway, naming the first missing migration", "[pg][run]") {
  const test::scratch_database database(false);
  const auto all = db::embedded_migrations();
  REQUIRE(all.size() >= 2);
  {
    const auto admin = database.connect_as_admin();
    db::apply_migrations(*admin, all.first(all.size() - 1));
  }
  const test::root_key_file key;
  const auto result = test::run_bankworker({"run"}, {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                     {"BANKWORKER_ROOT_KEY_FILE", key.path_text()}});
  CHECK(result.exit_code == 1);
  CHECK_THAT(result.err, Catch::Contains("first " + std::string(all.back().name)) &&
                             Catch::Contains("1 migration(s) pending") && Catch::Contains("bankworker migrate"));
}

TEST_CASE("SIGHUP re-reads the log level file and a kept-alive connection opened before it still works",
          "[pg][run]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::filesystem::path level_file = key.path().parent_path() / "log-level";
  const std::filesystem::path log_file = key.path().parent_path() / "worker.log";
  const auto set_level = [&](std::string_view word) { std::ofstream(level_file) << word << "\n"; };
  set_level("info");
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                                  {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                                  {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                                  {"BANKWORKER_LOG_LEVEL", "error"},
                                                  {"BANKWORKER_LOG_LEVEL_FILE", level_file.string()}};
  // The worker's stderr (its log) goes to a file the test reads; exec keeps the worker's pid.
  test::child_process worker("/bin/sh", {"-c", "exec \"$0\" run 2>\"$1\"", BANKWORKER_BINARY, log_file.string()},
                             env);
  REQUIRE(eventually([&] { return test::http_get("http://127.0.0.1:" + std::to_string(admin_port) + "/healthz").status == 200; }));
  const auto log = [&] { return file_text(log_file); };
  // The file wins over BANKWORKER_LOG_LEVEL=error: info lines are written, debug ones are not.
  CHECK_THAT(log(), Catch::Contains("\"msg\":\"bankworker running\""));

  const test::raw_connection kept(admin_port);
  REQUIRE(kept.connected());
  CHECK(healthz_on(kept) == 200);
  CHECK(occurrences(log(), "\"level\":\"debug\"") == 0);

  SECTION("louder: debug lines appear, and the connection from before the signal still serves") {
    set_level("debug");
    worker.signal(SIGHUP);
    REQUIRE(eventually([&] { return log().find("\"from\":\"info\",\"to\":\"debug\"") != std::string::npos; }));
    CHECK(healthz_on(kept) == 200);
    CHECK(eventually([&] { return occurrences(log(), "\"msg\":\"http request\"") >= 1; }));

    // A file that holds no level keeps the level, says so naming the variable, and the worker lives on.
    set_level("loud");
    worker.signal(SIGHUP);
    REQUIRE(eventually([&] { return log().find("BANKWORKER_LOG_LEVEL_FILE:") != std::string::npos; }));
    CHECK_THAT(log(), Catch::Contains("holds 'loud'") && Catch::Contains("keeping the current log level"));
    const std::size_t debug_before = occurrences(log(), "\"msg\":\"http request\"");
    CHECK(healthz_on(kept) == 200);
    CHECK(eventually([&] { return occurrences(log(), "\"msg\":\"http request\"") > debug_before; }));

    // Quieter again: the change is logged before it takes effect, then requests log nothing.
    set_level("warn");
    worker.signal(SIGHUP);
    REQUIRE(eventually([&] { return log().find("\"from\":\"debug\",\"to\":\"warn\"") != std::string::npos; }));
    const std::size_t lines_before = occurrences(log(), "\n");
    CHECK(healthz_on(kept) == 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(occurrences(log(), "\n") == lines_before);
  }
  SECTION("an unreadable file at a reload keeps the level") {
    std::filesystem::remove(level_file);
    worker.signal(SIGHUP);
    REQUIRE(eventually([&] { return log().find("BANKWORKER_LOG_LEVEL_FILE: cannot read") != std::string::npos; }));
    CHECK(healthz_on(kept) == 200);
    CHECK(occurrences(log(), "\"level\":\"debug\"") == 0);
  }
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE("/readyz is unready, naming the migration, when the schema loses one under a running worker", "[pg][run]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string readyz = "http://127.0.0.1:" + std::to_string(admin_port) + "/readyz";
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_LOG_LEVEL", "error"}});
  REQUIRE(eventually([&] { return test::http_get(readyz).status == 200; }));
  const std::string newest(db::embedded_migrations().back().name);
  const auto admin = database.connect_as_admin();
  std::string checksum;
  {
    // As if the database were restored from a backup taken before the newest migration.
    pqxx::work tx(*admin);
    checksum = tx.exec_params1("DELETE FROM bankworker.schema_migrations WHERE name = $1 RETURNING checksum", newest)[0]
                   .as<std::string>();
    tx.commit();
  }
  // /readyz asks the database at most once per readyz_database_check_interval_ms: the loss shows
  // within that interval, not necessarily at the next request.
  test::http_result unready;
  CHECK(eventually([&] { return (unready = test::http_get(readyz)).status == 503; },
                   bankworker::limits::readyz_database_check_interval_ms * 3));
  CHECK_THAT(unready.body, Catch::Contains("schema older than this binary: migration " + newest + " not applied"));
  CHECK(test::http_get("http://127.0.0.1:" + std::to_string(admin_port) + "/healthz").status == 200);
  {
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.schema_migrations (name, checksum) VALUES ($1, $2)", newest, checksum);
    tx.commit();
  }
  CHECK(eventually([&] { return test::http_get(readyz).status == 200; },
                   bankworker::limits::readyz_database_check_interval_ms * 3));
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE("/readyz is unready while the LISTEN connection is lost and ready once it listens again", "[pg][run]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string readyz = "http://127.0.0.1:" + std::to_string(admin_port) + "/readyz";
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(test::free_loopback_port())},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_LOG_LEVEL", "error"}});
  REQUIRE(eventually([&] { return test::http_get(readyz).status == 200; }));
  const auto admin = database.connect_as_admin();
  {
    // Until the listener reconnects (a second later), a secret removed elsewhere would not be
    // forgotten here: the worker must not call itself ready.
    pqxx::nontransaction tx(*admin);
    const long ended = tx.exec_params1("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = $1 AND query LIKE 'LISTEN %'",
                                       database.name())[0]
                           .as<long>();
    REQUIRE(ended == 1);
  }
  test::http_result unready;
  CHECK(eventually([&] { return (unready = test::http_get(readyz)).status == 503; }, std::chrono::seconds(1)));
  CHECK_THAT(unready.body, Catch::Contains("not yet listening for notifications"));
  CHECK(eventually([&] { return test::http_get(readyz).status == 200; }, std::chrono::seconds(10)));
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE("run registers its process in the process list before it is ready and marks it stopped on SIGTERM",
          "[pg][run][worker_processes]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(test::free_loopback_port())},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_LOG_LEVEL", "error"}});
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }));
  const auto admin = database.connect_as_admin();
  const auto state_of_worker = [&] {
    pqxx::work tx(*admin);
    const auto rows = tx.exec_params("SELECT state, hostname FROM bankworker.worker_processes(100, NULL) WHERE os_pid = $1",
                                     static_cast<int>(worker.pid()));
    return rows.size() == 1 ? rows[0][0].as<std::string>() : "rows: " + std::to_string(rows.size());
  };
  CHECK(state_of_worker() == "alive");
  // The gauges' first refresh counts it.
  CHECK(eventually([&] {
    return metric_value(test::http_get(admin_base + "/metrics").body, "bankworker_worker_processes{state=\"alive\"}") == 1;
  }));
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
  CHECK(state_of_worker() == "stopped");
}

TEST_CASE("/readyz hammered from four clients asks the database at most once a second", "[pg][run][attack]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);
  test::child_process worker(BANKWORKER_BINARY, {"run"},
                             {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                              {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                              {"BANKWORKER_LOG_LEVEL", "error"}});
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }));
  const std::string series = "bankworker_readyz_database_checks_total";
  const std::uint64_t checks_before = test::metric_value(test::http_get(admin_base + "/metrics").body, series);
  REQUIRE(checks_before >= 1);

  constexpr int clients = 4;
  constexpr int requests_per_client = 500;
  std::atomic<int> ready_answers{0};
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> hammer;
  for (int c = 0; c < clients; ++c) {
    hammer.emplace_back([&] {
      for (int i = 0; i < requests_per_client; ++i) {
        if (test::http_get(admin_base + "/readyz").status == 200) ++ready_answers;
      }
    });
  }
  for (auto& thread : hammer) thread.join();
  const auto elapsed = std::chrono::steady_clock::now() - started;
  const std::uint64_t checks = test::metric_value(test::http_get(admin_base + "/metrics").body, series) - checks_before;
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(elapsed).count();
  INFO(clients * requests_per_client << " requests in " << seconds << " s asked the database " << checks << " times");
  CHECK(ready_answers == clients * requests_per_client);
  // One check per whole interval that passed, plus one for the interval the hammering began in.
  CHECK(checks <= static_cast<std::uint64_t>(elapsed / bankworker::limits::readyz_database_check_interval_ms) + 1);
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE("run verifies, stores once, posts and drains: Stripe events end to end", "[pg][run][e2e]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                            {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                            {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                            {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "warn"}};
  const auto created = test::run_bankworker({"tenant", "create", "--name", "Run Ltd"}, env);
  REQUIRE(created.exit_code == 0);
  const std::string tenant = created.out.substr(0, created.out.size() - 1);
  const std::string secret_path = key.path().parent_path().string() + "/whsec";
  {
    std::ofstream(secret_path) << webhook_secret << "\n";
  }
  ::chmod(secret_path.c_str(), 0600);
  REQUIRE(test::run_bankworker({"stripe", "secret", "add", "--tenant", tenant, "--secret-file", secret_path}, env)
              .exit_code == 0);

  test::child_process worker(BANKWORKER_BINARY, {"run"}, env);
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/healthz").status == 200; }));
  // Ready once its LISTEN connection is in place too, a moment after it is alive.
  CHECK(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }, std::chrono::seconds(5)));

  test::child_process stripe(STRIPE_SIM_BINARY, {"--port", "0"}, {});
  const std::string sim = test::base_url_from(stripe);
  const std::string hook = base + "/webhooks/stripe/" + tenant;
  const auto trigger = [&](std::string_view kind, std::string_view mode) {
    return test::http_post(sim + "/sim/trigger", "{\"kind\":\"" + std::string(kind) + "\",\"mode\":\"" +
                                                     std::string(mode) + "\",\"secret\":\"" + webhook_secret +
                                                     "\",\"deliver_to\":\"" + hook + "\"}")
        .body;
  };
  CHECK_THAT(trigger("payment", "valid"), Catch::Contains("\"statuses\":[200,200]"));
  CHECK_THAT(trigger("refund", "duplicate"), Catch::Contains("\"statuses\":[200,200,200,200]"));
  CHECK_THAT(trigger("payout", "forged"), Catch::Contains("\"statuses\":[400]"));
  CHECK_THAT(trigger("payout", "stale"), Catch::Contains("\"statuses\":[400]"));
  // An unknown tenant is 404 once the request carries a well-formed, fresh signature header (one
  // without is 400 before any lookup, issue #23).
  const std::int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(test::http_post(base + "/webhooks/stripe/00000000-0000-4000-8000-000000000000", "{}",
                        {"Stripe-Signature: " + sim::stripe::simulator::sign("{}", webhook_secret, now_s)})
            .status == 404);
  // No BANKWORKER_STRIPE_PLATFORM_SECRET_FILE: the Connect platform endpoint is off.
  CHECK(test::http_post(base + "/webhooks/stripe", "{}").status == 404);
  CHECK(test::http_post(base + "/webhooks/stripe/'%20OR%201=1%20--", "{}").status == 404);
  CHECK(test::http_post(hook, std::string((1 << 20) + 1, 'x')).status == 413);

  const auto admin = database.connect_as_admin();
  // payment: charge.succeeded + payment_intent.succeeded; refund: refund.created + charge.refunded.
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.stripe_events") == 4);
  REQUIRE(eventually([&] {
    return count(*admin, "SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 4;
  }));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.journal_entries") == 2);  // one gross, one refund
  CHECK(count(*admin, "SELECT count(*) FROM (SELECT currency FROM bankworker.journal_lines GROUP BY currency"
                      " HAVING sum(amount_minor) <> 0) unbalanced") == 0);

  const std::string metrics = test::http_get(admin_base + "/metrics").body;
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"stored\"} 4"));
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"duplicate\"} 2"));
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"bad_signature\"} 1"));
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"stale\"} 1"));
  // The outcome is counted just after the posting's commit that the wait above saw. The posters
  // took the events from the inbox: no stripe.post job ran (issue #21).
  CHECK(eventually([&] {
    const std::string now = test::http_get(admin_base + "/metrics").body;
    return now.find("bankworker_stripe_postings_total{outcome=\"posted\"} 4") != std::string::npos;
  }));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post'") == 0);
  CHECK_THAT(metrics, Catch::Contains("bankworker_db_pool_connections_in_use "));
  // The oversized body above: refused by the server before the route, counted as both.
  CHECK(metric_value(metrics, "bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"too_large\"}") == 1);
  CHECK(metric_value(metrics, "bankworker_http_refused_total{reason=\"too_large\"}") == 1);
  // Every checkout waited for a connection (mostly not at all), and the tenant key that opened the
  // webhook secret was unwrapped once, then served from the cache or not needed again.
  CHECK(metric_value(metrics, "bankworker_db_pool_wait_seconds_count") > 0);
  CHECK(metric_value(metrics, "bankworker_db_pool_wait_seconds_bucket{le=\"+Inf\"}") ==
        metric_value(metrics, "bankworker_db_pool_wait_seconds_count"));
  CHECK(metric_value(metrics, "bankworker_key_cache_misses_total") >= 1);
  CHECK_THAT(metrics, Catch::Contains("\nbankworker_key_cache_hits_total "));
  CHECK_THAT(metrics, Catch::Contains("\nbankworker_process_resident_memory_bytes "));
  CHECK_THAT(metrics, Catch::Contains("bankworker_http_request_duration_seconds_count{route=\"POST /webhooks/stripe/\"} 10"));

  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.jobs WHERE state = 'running'") == 0);
}

TEST_CASE("kill -9 of the worker mid-pagination loses and doubles nothing: the restarted worker resumes the sync",
          "[pg][run][e2e][plaid]") {
  const test::scratch_database database;
  const test::root_key_file key;
  // 1,600 transactions are four pages of 500; each page takes 700 ms, so the walk is caught mid-way.
  test::plaid_simulator plaid({"--transactions", "1600"});
  plaid.post("/sim/faults", R"({"endpoint":"/transactions/sync","delay_ms":700,"times":4})");
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                            {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                            {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                            {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                            {"BANKWORKER_PLAID_BASE_URL", plaid.url},
                                            {"BANKWORKER_PLAID_CLIENT_ID", test::sim_client_id},
                                            {"BANKWORKER_PLAID_SECRET", test::sim_secret},
                                            {"BANKWORKER_JOB_LEASE", "3"},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "warn"}};
  const auto created = test::run_bankworker({"tenant", "create", "--name", "Sync Ltd"}, env);
  REQUIRE(created.exit_code == 0);
  const std::string tenant = created.out.substr(0, created.out.size() - 1);

  auto worker = std::make_unique<test::child_process>(BANKWORKER_BINARY, std::vector<std::string>{"run"}, env);
  const auto linked =
      test::run_bankworker({"--json", "plaid", "link", "--tenant", tenant, "--public-token", plaid.public_token(), "--wait"}, env);
  INFO(linked.out << linked.err);
  REQUIRE(linked.exit_code == 0);
  const auto at = linked.out.find("\"connection_id\":\"");
  REQUIRE(at != std::string::npos);
  const std::string connection = linked.out.substr(at + 17, 36);

  const auto admin = database.connect_as_admin();
  const std::string item = [&] {
    pqxx::work tx(*admin);
    return tx.exec_params1("SELECT item_id FROM bankworker.connections WHERE connection_id = $1::uuid", connection)[0]
        .as<std::string>();
  }();
  // Two pages fetched, two to go: kill it.
  REQUIRE(eventually([&] { return plaid.calls("/transactions/sync", item) >= 2; }));
  worker->signal(SIGKILL);
  CHECK(worker->wait(std::chrono::seconds(10)) == -1);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.transactions") == 0);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.connections WHERE sync_cursor IS NOT NULL") == 0);

  // A new worker rescues the job once its lease (3 s) has expired and syncs from the stored cursor.
  worker = std::make_unique<test::child_process>(BANKWORKER_BINARY, std::vector<std::string>{"run"}, env);
  REQUIRE(eventually([&] { return count(*admin, "SELECT count(*) FROM bankworker.connections WHERE last_synced_at IS NOT NULL") == 1; },
                     std::chrono::seconds(60)));
  const auto expected = plaid.truth(plaid.access_token_of(item));
  CHECK(expected.size() >= 1'000);
  CHECK(test::stored_rows(*admin, connection) == expected);

  const auto listed = test::run_bankworker({"--json", "connections", "list", "--tenant", tenant}, env);
  CHECK_THAT(listed.out, Catch::Contains("\"status\":\"active\"") &&
                             Catch::Contains("\"transactions\":" + std::to_string(expected.size())));

  // New data at the bank, announced by a signed SYNC_UPDATES_AVAILABLE webhook: the worker
  // verifies it and syncs again.
  const std::string token = plaid.access_token_of(item);
  plaid.post("/sim/transactions/add", "{\"access_token\":\"" + token + "\",\"amount_minor\":-4200}");
  const std::string hook = "http://127.0.0.1:" + std::to_string(port) + "/webhooks/plaid";
  CHECK_THAT(plaid.post("/sim/webhooks/send", "{\"access_token\":\"" + token + "\",\"url\":\"" + hook + "\"}"),
             Catch::Contains("\"status\":200"));
  CHECK_THAT(plaid.post("/sim/webhooks/send", "{\"access_token\":\"" + token + "\",\"url\":\"" + hook +
                                                  "\",\"signing\":\"alg_none\"}"),
             Catch::Contains("\"status\":400"));
  const auto updated = plaid.truth(token);
  REQUIRE(updated.size() == expected.size() + 1);
  CHECK(eventually([&] { return test::stored_rows(*admin, connection) == updated; }, std::chrono::seconds(30)));

  // Revocation from the command line: Plaid is told once, the token is shredded.
  const auto revoked =
      test::run_bankworker({"connections", "revoke", "--tenant", tenant, "--connection", connection, "--wait"}, env);
  INFO(revoked.out << revoked.err);
  CHECK(revoked.exit_code == 0);
  CHECK(plaid.calls("/item/remove", item) == 1);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.sealed_secrets WHERE purpose = 'plaid.access_token'") == 0);

  worker->signal(SIGTERM);
  CHECK(worker->wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE("while PostgreSQL is unreachable webhooks and /readyz answer 503 at once; once it is back every event is "
          "stored exactly once",
          "[pg][run][e2e]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const auto [db_host, db_port] = test::host_and_port(database.url());
  test::tcp_proxy proxy(db_host, db_port);
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", test::url_through(database.runtime_url(), proxy.port())},
                                            {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                            {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                            {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "error"}};
  const auto created = test::run_bankworker({"tenant", "create", "--name", "Outage Ltd"}, env);
  REQUIRE(created.exit_code == 0);
  const std::string tenant = created.out.substr(0, created.out.size() - 1);
  const std::string secret_path = key.path().parent_path().string() + "/whsec";
  {
    std::ofstream(secret_path) << webhook_secret << "\n";
  }
  ::chmod(secret_path.c_str(), 0600);
  REQUIRE(test::run_bankworker({"stripe", "secret", "add", "--tenant", tenant, "--secret-file", secret_path}, env)
              .exit_code == 0);
  test::child_process worker(BANKWORKER_BINARY, {"run"}, env);
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }));

  sim::stripe::simulator stripe(11);
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  const auto deliveries = stripe.trigger({}, sim::stripe::delivery_mode::valid, webhook_secret, now_s);
  REQUIRE(deliveries.size() == 2);
  const std::string hook = base + "/webhooks/stripe/" + tenant;
  const auto deliver = [&](const sim::stripe::delivery& d) {
    return test::http_post(hook, d.body, {"Content-Type: application/json", "Stripe-Signature: " + d.signature_header})
        .status;
  };

  proxy.set_down(true);
  for (const auto& d : deliveries) {
    const auto started = std::chrono::steady_clock::now();
    CHECK(deliver(d) == 503);
    // Well inside Stripe's own delivery timeout, so Stripe records a failure and retries later.
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
  }
  // Within readyz_database_check_interval_ms of the outage (its answer may be that old).
  CHECK(eventually([&] { return test::http_get(admin_base + "/readyz").status == 503; },
                   bankworker::limits::readyz_database_check_interval_ms * 3));
  CHECK(test::http_get(admin_base + "/healthz").status == 200);

  proxy.set_down(false);
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }, std::chrono::seconds(30)));
  // Stripe retries each event; the first retry after the outage may still meet a broken pooled
  // connection, so deliver until it is acknowledged, then once more as a duplicate.
  for (const auto& d : deliveries) {
    CHECK(eventually([&] { return deliver(d) == 200; }, std::chrono::seconds(30)));
    CHECK(deliver(d) == 200);
  }
  const auto admin = database.connect_as_admin();
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.stripe_events") == 2);
  REQUIRE(eventually([&] {
    return count(*admin, "SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 2;
  }));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.journal_entries") == 1);
  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}
