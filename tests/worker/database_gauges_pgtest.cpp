// The database gauges against the private PostgreSQL: every series there from start-up at zero,
// and one refresh that counts jobs by kind and state, connections by status and the unposted
// inbox, as the runtime login (the functions must work without BYPASSRLS).
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>

#include <thread>

#include "connectors/stripe/gauges.hpp"
#include "crypto/random.hpp"
#include "queue/worker_processes.hpp"
#include "service/metrics.hpp"
#include "tests/support/scratch_database.hpp"
#include "worker/database_gauges.hpp"
#include "connectors/plaid/gauges.hpp"
#include "connectors/stripe/gauges.hpp"
#include "service/metrics.hpp"

using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace db = bankworker::db;
namespace worker = bankworker::worker;
namespace plaid = bankworker::plaid;
namespace stripe = bankworker::stripe;

namespace {

void run_admin(const scratch_database& database, const std::string& sql) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec(sql);
  tx.commit();
}

// The value of one series in an exposition ("name{labels}"), or -1 when it is not there.
long series_value(const std::string& exposition, const std::string& series) {
  const std::string line_start = "\n" + series + " ";
  const auto at = exposition.find(line_start);
  if (at == std::string::npos) return -1;
  return std::stol(exposition.substr(at + line_start.size()));
}

struct test_gauges {
  explicit test_gauges(const scratch_database& database, std::vector<std::string> kinds)
      : connections([&] {
          db::pool_settings pool_config;
          pool_config.connections = 1;
          return database.worker_pool(std::move(pool_config));
        }()),
        log(bankworker::service::log_level::warn),
        gauges(io, blocking, *connections, metrics, log, kinds),
        plaid_gauges(metrics),
        stripe_gauges(metrics) {
    // As bankworker run plugs them in: the providers' statements join the one round trip.
    for (bankworker::service::database_gauge& gauge : plaid_gauges.gauges()) gauges.add_gauge(std::move(gauge));
    gauges.add_gauge(stripe_gauges.gauge());
  }
  ~test_gauges() { blocking.join(); }

  std::unique_ptr<db::pool> connections;
  bankworker::service::metrics_registry metrics;
  bankworker::service::logger log;
  asio::io_context io;
  asio::thread_pool blocking{1};
  worker::database_gauges gauges;
  plaid::connection_gauges plaid_gauges;
  stripe::inbox_gauges stripe_gauges;
};

constexpr const char* tenant_sql =
    "INSERT INTO bankworker.tenants (tenant_id, name) VALUES ('00000000-0000-0000-0000-00000000000a', 'gauges');";

// One job of `kind` in `state`, run_at `run_at` (SQL), with the columns the state's checks ask for.
std::string job_sql(const std::string& kind, const std::string& state, const std::string& run_at) {
  const bool running = state == "running";
  const bool finished = state == "failed" || state == "succeeded";
  return "INSERT INTO bankworker.jobs (tenant_id, kind, state, run_at, lease_owner, lease_expires_at, finished_at,"
         " failure) VALUES ('00000000-0000-0000-0000-00000000000a', '" + kind + "', '" + state + "', " + run_at + ", " +
         (running ? "gen_random_uuid(), now() + interval '1 minute'" : "NULL, NULL") + ", " +
         (finished ? "now()" : "NULL") + ", " + (state == "failed" ? "'attempts_exhausted'" : "NULL") + ");";
}

}  // namespace

TEST_CASE("every job kind's states, every connection status and the inbox are on /metrics at zero from start-up",
          "[pg][database_gauges]") {
  const scratch_database database;
  test_gauges test(database, {"plaid.sync", "stripe.post"});
  const std::string exposition = test.metrics.render();
  for (const std::string kind : {"plaid.sync", "stripe.post"}) {
    for (const std::string_view state : worker::job_gauge_states) {
      CHECK(series_value(exposition, "bankworker_jobs{kind=\"" + kind + "\",state=\"" + std::string(state) + "\"}") == 0);
    }
    CHECK(series_value(exposition, "bankworker_jobs_oldest_available_age_seconds{kind=\"" + kind + "\"}") == 0);
  }
  for (const std::string status : {"active", "needs_reauth", "broken", "revoking"}) {
    CHECK(series_value(exposition, "bankworker_connections{status=\"" + status + "\"}") == 0);
  }
  CHECK(series_value(exposition, "bankworker_inbox_unposted_events") == 0);
  CHECK(series_value(exposition, "bankworker_inbox_oldest_unposted_age_seconds") == 0);
  for (const std::string_view state : bankworker::queue::worker_process_states) {
    CHECK(series_value(exposition, "bankworker_worker_processes{state=\"" + std::string(state) + "\"}") == 0);
  }
}

TEST_CASE("the refresh beats for this process once its heartbeat interval has passed, and counts processes by state",
          "[pg][database_gauges][worker_processes]") {
  const scratch_database database;
  test_gauges test(database, {});
  namespace queue = bankworker::queue;
  queue::worker_process_record process(
      *test.connections, {.id = bankworker::crypto::random_uuid(), .hostname = "gauges-host", .pid = 77,
                          .version = "test", .heartbeat_interval = std::chrono::milliseconds(200)});
  process.beat();
  queue::worker_process_record stopped(
      *test.connections, {.id = bankworker::crypto::random_uuid(), .hostname = "stopped-host", .pid = 78,
                          .version = "test", .heartbeat_interval = std::chrono::milliseconds(200)});
  stopped.beat();
  stopped.stop();
  test.gauges.add_heartbeat(process);
  const auto last_beat = [&] {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    return tx.exec1("SELECT last_heartbeat_at FROM bankworker.worker_processes WHERE hostname = 'gauges-host'")[0]
        .as<std::string>();
  };
  const std::string registered = last_beat();

  // Within the interval: the refresh does not beat.
  REQUIRE(test.gauges.refresh());
  CHECK(last_beat() == registered);
  const std::string seen = test.metrics.render();
  CHECK(series_value(seen, "bankworker_worker_processes{state=\"alive\"}") == 1);
  CHECK(series_value(seen, "bankworker_worker_processes{state=\"stopped\"}") == 1);
  CHECK(series_value(seen, "bankworker_worker_processes{state=\"silent\"}") == 0);

  // Past it: the next refresh beats.
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  REQUIRE(test.gauges.refresh());
  CHECK(last_beat() > registered);

  // Three intervals without a beat (no refresh ran): the next refresh counts it silent only if
  // it does not beat first, and it does, so the process stays alive.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  REQUIRE(test.gauges.refresh());
  CHECK(series_value(test.metrics.render(), "bankworker_worker_processes{state=\"alive\"}") == 1);
}

TEST_CASE("one refresh counts jobs by kind and state, connections by status and the unposted inbox, then zeroes what left",
          "[pg][database_gauges]") {
  const scratch_database database;
  std::string fixtures = tenant_sql;
  fixtures += job_sql("plaid.sync", "available", "now() - interval '90 seconds'");
  fixtures += job_sql("plaid.sync", "available", "now() - interval '10 seconds'");
  fixtures += job_sql("plaid.sync", "available", "now() + interval '1 hour'");   // scheduled
  fixtures += job_sql("plaid.sync", "retryable", "now() + interval '1 hour'");   // scheduled too
  fixtures += job_sql("plaid.sync", "running", "now() - interval '1 hour'");     // running: not waiting
  fixtures += job_sql("stripe.post", "retryable", "now() - interval '30 seconds'");
  fixtures += job_sql("stripe.post", "failed", "now() - interval '1 day'");
  fixtures += job_sql("stripe.post", "succeeded", "now() - interval '1 day'");   // not shown
  fixtures += job_sql("plaid.revoke", "failed", "now()");                        // a kind no handler knows
  for (const std::string status : {"active", "active", "needs_reauth", "revoking"}) {
    fixtures += "INSERT INTO bankworker.connections (tenant_id, connection_id, environment, item_id, status) VALUES"
                " ('00000000-0000-0000-0000-00000000000a', gen_random_uuid(), 'sandbox', 'item-' || gen_random_uuid(), '" +
                status + "');";
  }
  for (const std::string state : {"received", "received", "posted"}) {
    fixtures += "INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, livemode, created_at, received_at,"
                " body, state) VALUES ('00000000-0000-0000-0000-00000000000a', 'evt_' || gen_random_uuid(),"
                " 'charge.succeeded', false, now(), now() - interval '2 minutes', '{}', '" + state + "');";
  }
  run_admin(database, fixtures);

  test_gauges test(database, {"plaid.sync", "stripe.post"});
  REQUIRE(test.gauges.refresh());
  const std::string seen = test.metrics.render();
  CHECK(series_value(seen, "bankworker_jobs{kind=\"plaid.sync\",state=\"available\"}") == 2);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"plaid.sync\",state=\"scheduled\"}") == 2);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"plaid.sync\",state=\"running\"}") == 1);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"plaid.sync\",state=\"dead\"}") == 0);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"stripe.post\",state=\"retryable\"}") == 1);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"stripe.post\",state=\"dead\"}") == 1);
  CHECK(series_value(seen, "bankworker_jobs{kind=\"plaid.revoke\",state=\"dead\"}") == 1);
  const long sync_oldest_s = series_value(seen, "bankworker_jobs_oldest_available_age_seconds{kind=\"plaid.sync\"}");
  CHECK(sync_oldest_s >= 90);
  CHECK(sync_oldest_s < 3600);  // the running job's old run_at is not a wait
  CHECK(series_value(seen, "bankworker_jobs_oldest_available_age_seconds{kind=\"stripe.post\"}") >= 30);
  CHECK(series_value(seen, "bankworker_connections{status=\"active\"}") == 2);
  CHECK(series_value(seen, "bankworker_connections{status=\"needs_reauth\"}") == 1);
  CHECK(series_value(seen, "bankworker_connections{status=\"revoking\"}") == 1);
  CHECK(series_value(seen, "bankworker_connections{status=\"broken\"}") == 0);
  CHECK(series_value(seen, "bankworker_inbox_unposted_events") == 2);
  CHECK(series_value(seen, "bankworker_inbox_oldest_unposted_age_seconds") >= 120);
  CHECK(series_value(seen, "bankworker_database_up") == 1);

  run_admin(database, "DELETE FROM bankworker.jobs; UPDATE bankworker.stripe_events SET state = 'posted', posted_at = now();"
                      " UPDATE bankworker.connections SET status = 'broken'");
  REQUIRE(test.gauges.refresh());
  const std::string after = test.metrics.render();
  CHECK(series_value(after, "bankworker_jobs{kind=\"plaid.sync\",state=\"available\"}") == 0);
  CHECK(series_value(after, "bankworker_jobs{kind=\"plaid.revoke\",state=\"dead\"}") == 0);
  CHECK(series_value(after, "bankworker_jobs_oldest_available_age_seconds{kind=\"plaid.sync\"}") == 0);
  CHECK(series_value(after, "bankworker_connections{status=\"active\"}") == 0);
  CHECK(series_value(after, "bankworker_connections{status=\"broken\"}") == 4);
  CHECK(series_value(after, "bankworker_inbox_unposted_events") == 0);
  CHECK(series_value(after, "bankworker_inbox_oldest_unposted_age_seconds") == 0);
}
