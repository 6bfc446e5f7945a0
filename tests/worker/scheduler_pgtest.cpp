// The scheduler against the private PostgreSQL: which connections get a periodic sync, the
// jitter on the next one, two schedulers racing over the same due connections, and maintenance
// that runs once per interval however many schedulers look.
#include <catch2/catch.hpp>
#include <signal.h>

#include <map>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>

#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"
#include "service/metrics.hpp"
#include "connectors/plaid/sync_schedule.hpp"
#include "worker/scheduler.hpp"

using namespace std::chrono_literals;
using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace db = bankworker::db;
namespace queue = bankworker::queue;
namespace worker = bankworker::worker;
namespace plaid = bankworker::plaid;

namespace {

const std::chrono::system_clock::time_point t0 = std::chrono::system_clock::time_point(1'790'000'000s);

long scalar(const scratch_database& database, const std::string& sql) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  return tx.exec1(sql)[0].as<long>();
}

void run_admin(const scratch_database& database, const std::string& sql) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec(sql);
  tx.commit();
}

// `tenants` tenants with `per_tenant` connections each, all in `status`, next sync at `next_sync`
// (SQL). Fixture rows are inserted as the cluster admin, as in rls_pgtest.
void insert_connections(const scratch_database& database, int tenants, int per_tenant, const std::string& status,
                        const std::string& next_sync, const std::string& tag) {
  run_admin(database,
            "INSERT INTO bankworker.tenants (tenant_id, name)"
            " SELECT md5('" + tag + "' || t)::uuid, 'tenant " + tag + "' || t FROM generate_series(1, " +
                std::to_string(tenants) + ") t ON CONFLICT DO NOTHING;"
            " INSERT INTO bankworker.connections (tenant_id, connection_id, environment, item_id, status, next_sync_at)"
            " SELECT md5('" + tag + "' || t)::uuid, md5('" + tag + "' || t || ':' || c)::uuid, 'sandbox',"
            " 'item-" + tag + "-' || t || '-' || c, '" + status + "', " + next_sync +
                " FROM generate_series(1, " + std::to_string(tenants) + ") t, generate_series(1, " +
                std::to_string(per_tenant) + ") c");
}

std::string at_text(std::chrono::system_clock::time_point at) { return "'" + queue::timestamp_text(at) + "'::timestamptz"; }

// The scheduler's settings and Plaid's periodic-sync settings together (no field is in both), as
// bankworker run pairs them: the sync schedule is one of the scheduler's every-tick tasks.
struct schedule_settings : worker::scheduler_settings, plaid::sync_schedule_settings {};

// What one tick did: the scheduler's report and the sync schedule's.
struct tick_report : worker::scheduler_report, plaid::sync_schedule_report {};

// One scheduler with its own pool, DB threads and io_context (never run unless a test runs it),
// with the periodic Plaid syncs as its task.
struct test_scheduler {
  test_scheduler(const scratch_database& database, schedule_settings settings,
                 bankworker::service::metrics_registry* metrics = nullptr)
      : connections([&] {
          db::pool_settings pool_config;
          pool_config.connections = 2;
          return database.worker_pool(std::move(pool_config));
        }()),
        jobs(*connections, queue::queue_settings{}),
        log(bankworker::service::log_level::warn),
        scheduler(io, blocking, *connections, jobs, settings, log, metrics),
        syncs(*connections, log, settings) {
    scheduler.add_task({"plaid.schedule_syncs", std::chrono::milliseconds(0),
                        [this](const std::optional<std::string>& now) {
                          last_syncs = syncs.run(now);
                          return last_syncs.backlog;
                        }});
  }

  tick_report tick() {
    last_syncs = {};
    tick_report report;
    static_cast<worker::scheduler_report&>(report) = scheduler.tick();
    static_cast<plaid::sync_schedule_report&>(report) = last_syncs;
    return report;
  }

  ~test_scheduler() { blocking.join(); }

  std::unique_ptr<db::pool> connections;
  queue::job_queue jobs;
  bankworker::service::logger log;
  asio::io_context io;
  asio::thread_pool blocking{1};
  worker::scheduler scheduler;
  plaid::sync_schedule syncs;
  plaid::sync_schedule_report last_syncs;
};

schedule_settings at_time(std::chrono::system_clock::time_point now, std::uint64_t seed = 7) {
  schedule_settings settings;
  settings.clock = [now] { return now; };
  settings.seed = seed;
  return settings;
}

}  // namespace

TEST_CASE("due active connections get exactly one sync job each and others none", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 3, 4, "active", at_text(t0 - 1min), "due");
  insert_connections(database, 2, 2, "active", "NULL", "never");
  insert_connections(database, 1, 3, "active", at_text(t0 + 1min), "later");
  for (const char* status : {"needs_reauth", "revoked", "revoking", "linking"}) {
    insert_connections(database, 1, 2, status, at_text(t0 - 1h), status);
  }
  // An offboarded tenant's active connections are left alone too.
  insert_connections(database, 1, 2, "active", at_text(t0 - 1h), "offboarded");
  run_admin(database, "UPDATE bankworker.tenants SET status = 'offboarded' WHERE name LIKE 'tenant offboarded%'");
  test_scheduler first(database, at_time(t0));
  const tick_report report = first.tick();
  CHECK(report.failures == 0);
  CHECK(report.connections_scheduled == 12 + 4);
  CHECK(report.sync_jobs_enqueued == 12 + 4);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync' AND priority = 50") == 16);
  CHECK(scalar(database, "SELECT count(DISTINCT connection_id) FROM bankworker.jobs") == 16);
  // Each job names its connection the way request_sync does.
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs j JOIN bankworker.connections c"
                         " ON c.tenant_id = j.tenant_id AND c.connection_id = j.connection_id"
                         " WHERE c.status = 'active' AND j.unique_key = 'plaid.sync:' || c.connection_id"
                         " AND j.payload->>'connection_id' = c.connection_id::text") == 16);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs j JOIN bankworker.connections c"
                         " USING (tenant_id, connection_id) WHERE c.status <> 'active' OR c.item_id LIKE 'item-later%'"
                         " OR c.item_id LIKE 'item-offboarded%'") == 0);
  // A second tick at the same time finds nothing due.
  const tick_report again = first.tick();
  CHECK(again.connections_scheduled == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs") == 16);
}

TEST_CASE("a sync already waiting absorbs the periodic one and the connection still moves on", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 1, 1, "active", at_text(t0 - 1min), "waiting");
  run_admin(database, "INSERT INTO bankworker.jobs (tenant_id, kind, payload, priority, unique_key, connection_id)"
                      " SELECT tenant_id, 'plaid.sync', '{}', 50, 'plaid.sync:' || connection_id, connection_id"
                      " FROM bankworker.connections");
  test_scheduler first(database, at_time(t0));
  const tick_report report = first.tick();
  CHECK(report.connections_scheduled == 1);
  CHECK(report.sync_jobs_enqueued == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs") == 1);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.connections WHERE next_sync_at > " + at_text(t0)) == 1);
}

TEST_CASE("the next sync is the interval plus a jitter within its bound, spread across connections",
          "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 4, 50, "active", at_text(t0 - 1s), "spread");
  schedule_settings settings = at_time(t0, 12345);
  settings.sync_interval = 6h;
  settings.sync_jitter_percent = 10;
  test_scheduler first(database, settings);
  INFO("seed 12345");
  REQUIRE(first.tick().connections_scheduled == 200);
  const std::string offset_ms = "extract(epoch FROM next_sync_at - " + at_text(t0) + ") * 1000";
  CHECK(scalar(database, "SELECT min(" + offset_ms + ")::bigint FROM bankworker.connections") >= 6 * 3'600'000L);
  CHECK(scalar(database, "SELECT max(" + offset_ms + ")::bigint FROM bankworker.connections") <= 6 * 3'600'000L + 2'160'000L);
  // Spread, not lock-step: 200 connections land on many distinct times, over most of the window,
  // and in each tenth of it.
  CHECK(scalar(database, "SELECT count(DISTINCT next_sync_at) FROM bankworker.connections") > 190);
  CHECK(scalar(database, "SELECT (max(" + offset_ms + ") - min(" + offset_ms + "))::bigint FROM bankworker.connections") >
        2'160'000L * 8 / 10);
  CHECK(scalar(database, "SELECT count(DISTINCT floor((" + offset_ms + " - 21600000) / 216000)) FROM bankworker.connections") >= 10);
}

TEST_CASE("two schedulers on separate pools racing over 200 due connections schedule each exactly once",
          "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 10, 20, "active", at_text(t0 - 1min), "race");
  // Small batches so that the two interleave over many statements.
  schedule_settings settings_a = at_time(t0, 1);
  schedule_settings settings_b = at_time(t0, 2);
  settings_a.sync_batch = settings_b.sync_batch = 7;
  settings_a.sync_batches_per_tick = settings_b.sync_batches_per_tick = 100;
  test_scheduler a(database, settings_a);
  test_scheduler b(database, settings_b);
  tick_report report_a;
  tick_report report_b;
  std::thread racer_a([&] { report_a = a.tick(); });
  std::thread racer_b([&] { report_b = b.tick(); });
  racer_a.join();
  racer_b.join();
  CHECK(report_a.failures == 0);
  CHECK(report_b.failures == 0);
  CHECK(report_a.connections_scheduled + report_b.connections_scheduled == 200);
  CHECK(report_a.sync_jobs_enqueued + report_b.sync_jobs_enqueued == 200);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync'") == 200);
  CHECK(scalar(database, "SELECT count(DISTINCT (tenant_id, connection_id)) FROM bankworker.jobs") == 200);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.connections WHERE next_sync_at <= " + at_text(t0)) == 0);
  // Each maintenance task ran in exactly one of them.
  CHECK(report_a.tasks_run.size() + report_b.tasks_run.size() == 3);
}

TEST_CASE("maintenance prunes old external calls, keeps recent ones, and runs once per interval", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 2, 1, "active", "'infinity'", "calls");
  const auto now = std::chrono::system_clock::now();
  run_admin(database,
            "INSERT INTO bankworker.external_calls (tenant_id, provider, endpoint, http_status, bytes_sent,"
            " bytes_received, latency_us, occurred_at)"
            " SELECT t.tenant_id, 'plaid', '/transactions/sync', 200, 1, 2, 3, " + at_text(now) + " - d * interval '1 day'"
            " FROM bankworker.tenants t, generate_series(1, 40) d");
  schedule_settings settings = at_time(now);
  settings.prune_batch = 7;  // several batches
  settings.prune_batches_per_run = 1000;
  test_scheduler first(database, settings);
  test_scheduler second(database, settings);
  const tick_report report = first.tick();
  CHECK(report.failures == 0);
  CHECK(report.tasks_run.size() == 3);
  // Days 31..40 are older than 30 days; day 30 is exactly at the cutoff and stays: 10 per tenant.
  CHECK(report.external_calls_pruned == 2 * 10);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.external_calls") == 2 * 30);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.external_calls WHERE occurred_at < " + at_text(now) +
                             " - interval '30 days'") == 0);

  // Another scheduler before the interval is over runs none of it, even with old rows waiting.
  run_admin(database, "INSERT INTO bankworker.external_calls (tenant_id, provider, endpoint, http_status, bytes_sent,"
                      " bytes_received, latency_us, occurred_at) SELECT tenant_id, 'plaid', '/x', 200, 1, 2, 3,"
                      " " + at_text(now) + " - interval '90 days' FROM bankworker.tenants");
  const tick_report early = second.tick();
  CHECK(early.tasks_run.empty());
  CHECK(early.external_calls_pruned == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.external_calls") == 2 * 30 + 2);

  // Once the interval has passed, one of them runs it again.
  schedule_settings later = at_time(now + 2h);
  test_scheduler third(database, later);
  const tick_report next = third.tick();
  CHECK(next.tasks_run.size() == 3);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.external_calls WHERE endpoint = '/x'") == 0);
}

TEST_CASE("maintenance prunes finished jobs past retention", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 1, 1, "active", "'infinity'", "jobs");
  run_admin(database, "INSERT INTO bankworker.jobs (tenant_id, kind, state, finished_at)"
                      " SELECT tenant_id, 'test.done', 'succeeded', now() - (d - 0.5) * interval '1 hour'"
                      " FROM bankworker.tenants, generate_series(1, 48) d");
  schedule_settings settings = at_time(std::chrono::system_clock::now());
  settings.succeeded_retention = 24h;
  test_scheduler first(database, settings);
  // Finished 0.5 h to 47.5 h ago: the 24 older than a day go.
  const tick_report report = first.tick();
  CHECK(report.jobs_pruned == 24);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs") == 24);
}

TEST_CASE("the queue gauges show waiting jobs by kind and priority with the oldest one's age", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 1, 1, "active", at_text(t0 + 1h), "gauges");
  run_admin(database, "INSERT INTO bankworker.jobs (tenant_id, kind, priority, run_at)"
                      " SELECT tenant_id, 'test.a', 10, " + at_text(t0) + " - d * interval '1 minute'"
                      " FROM bankworker.tenants, generate_series(1, 3) d;"
                      " INSERT INTO bankworker.jobs (tenant_id, kind, priority, run_at)"
                      " SELECT tenant_id, 'test.b', 50, " + at_text(t0 + 1h) + " FROM bankworker.tenants");
  bankworker::service::metrics_registry metrics;
  test_scheduler first(database, at_time(t0), &metrics);
  CHECK(first.tick().failures == 0);
  const std::string text = metrics.render();
  CHECK_THAT(text, Catch::Contains("bankworker_queue_jobs{kind=\"test.a\",priority=\"10\"} 3"));
  CHECK_THAT(text, Catch::Contains("bankworker_queue_oldest_job_age_seconds{kind=\"test.a\",priority=\"10\"} 180"));
  // Not due yet: not waiting.
  CHECK_THAT(text, !Catch::Contains("test.b"));
  run_admin(database, "DELETE FROM bankworker.jobs");
  CHECK(first.tick().failures == 0);
  CHECK_THAT(metrics.render(), Catch::Contains("bankworker_queue_jobs{kind=\"test.a\",priority=\"10\"} 0"));
}

TEST_CASE("the scheduler coroutine ticks on its own until stopped", "[pg][scheduler]") {
  const scratch_database database;
  insert_connections(database, 2, 3, "active", "now() - interval '1 minute'", "running");
  schedule_settings settings;
  settings.tick = 100ms;
  test_scheduler running(database, settings);
  bool clean = false;
  asio::co_spawn(running.scheduler.executor(), running.scheduler.run(),
                 [&clean](std::exception_ptr failure) { clean = failure == nullptr; });
  std::thread io_thread([&] { running.io.run(); });
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (scalar(database, "SELECT count(*) FROM bankworker.jobs") < 6 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  running.scheduler.stop();
  io_thread.join();
  CHECK(clean);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync'") == 6);
}

TEST_CASE("two bankworker run processes enqueue each due connection's periodic sync once", "[pg][scheduler][e2e]") {
  const scratch_database database;
  insert_connections(database, 10, 20, "active", "now() - interval '1 minute'", "processes");
  const bankworker::test::root_key_file key;
  const auto env_on = [&](std::uint16_t port) {
    return std::map<std::string, std::string>{{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                              {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                              {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                              {"BANKWORKER_ADMIN_LISTEN",
                                               "127.0.0.1:" + std::to_string(bankworker::test::free_loopback_port())},
                                              {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                              {"BANKWORKER_LOG_LEVEL", "error"}};
  };
  bankworker::test::child_process first(BANKWORKER_BINARY, {"run"}, env_on(bankworker::test::free_loopback_port()));
  bankworker::test::child_process second(BANKWORKER_BINARY, {"run"}, env_on(bankworker::test::free_loopback_port()));
  // Both schedule at start-up. Nothing handles plaid.sync yet, so the dispatchers record those
  // jobs as failed; they stay in the table and are counted all the same.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (scalar(database, "SELECT count(*) FROM bankworker.connections WHERE next_sync_at <= now()") > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  std::this_thread::sleep_for(500ms);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.connections WHERE next_sync_at <= now()") == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'plaid.sync'") == 200);
  CHECK(scalar(database, "SELECT count(DISTINCT (tenant_id, connection_id)) FROM bankworker.jobs") == 200);
  // The three maintenance tasks and reconcile.overdue (worker/reconcile_jobs.hpp), each run once.
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.schedules WHERE last_run_at IS NOT NULL") == 4);
  first.signal(SIGTERM);
  second.signal(SIGTERM);
  CHECK(first.wait(20s) == 0);
  CHECK(second.wait(20s) == 0);
}

TEST_CASE("scheduler settings out of bounds are refused", "[pg][scheduler]") {
  plaid::sync_schedule_settings syncs;
  syncs.sync_jitter_percent = 51;
  CHECK_THROWS_AS(plaid::check_sync_schedule_settings(syncs), std::invalid_argument);
  syncs = plaid::sync_schedule_settings{};
  syncs.sync_batch = 0;
  CHECK_THROWS_AS(plaid::check_sync_schedule_settings(syncs), std::invalid_argument);
  CHECK_NOTHROW(plaid::check_sync_schedule_settings(plaid::sync_schedule_settings{}));
  worker::scheduler_settings settings;
  settings.tick = 10ms;
  CHECK_THROWS_AS(worker::check_scheduler_settings(settings), std::invalid_argument);
  CHECK_NOTHROW(worker::check_scheduler_settings(worker::scheduler_settings{}));
}
