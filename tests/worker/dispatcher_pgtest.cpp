// The dispatcher against the private PostgreSQL: wake-ups by NOTIFY alone and by polling alone,
// many jobs at bounded concurrency, and a worker process draining on SIGTERM.
#include <catch2/catch.hpp>
#include <signal.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/scratch_database.hpp"
#include "worker/dispatcher.hpp"

using namespace std::chrono_literals;
using bankworker::core::uuid;
using bankworker::test::child_process;
using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace queue = bankworker::queue;
namespace db = bankworker::db;
namespace worker = bankworker::worker;

namespace {

const uuid tenant_a = *uuid::parse("aaaaaaaa-0000-4000-8000-000000000001");

void insert_tenant(const scratch_database& database) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 'tenant')", tenant_a.to_string());
  tx.exec("CREATE TABLE public.effects (job_id bigint NOT NULL, pid integer NOT NULL,"
          " at timestamptz NOT NULL DEFAULT clock_timestamp())");
  tx.exec("GRANT SELECT, INSERT ON public.effects TO bankworker_worker");
  tx.commit();
}

long scalar(const scratch_database& database, const std::string& sql) {
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  return tx.exec1(sql)[0].as<long>();
}

std::vector<queue::new_job> jobs_of(const std::string& kind, std::size_t count) {
  std::vector<queue::new_job> jobs(count);
  for (auto& job : jobs) {
    job.tenant = tenant_a;
    job.kind = kind;
  }
  return jobs;
}

struct observed {
  std::atomic<int> started{0};
  std::atomic<int> saw_lease_lost{0};
  std::atomic<int> in_flight{0};
  std::atomic<int> most_in_flight{0};
};

// `seen` outlives the io_context (it lives in the test).
asio::awaitable<queue::outcome> count_job(observed* seen, std::chrono::milliseconds pause_for, queue::job,
                                          worker::job_context) {
  ++seen->started;
  const int now = ++seen->in_flight;
  int most = seen->most_in_flight.load();
  while (now > most && !seen->most_in_flight.compare_exchange_weak(most, now)) {
  }
  asio::steady_timer pause(co_await asio::this_coro::executor, pause_for);
  co_await pause.async_wait(asio::use_awaitable);
  --seen->in_flight;
  co_return queue::outcome::done();
}

// Runs until its lease is lost (a checkpoint every 10 ms), for at most 20 s.
asio::awaitable<queue::outcome> wait_for_cancel(observed* seen, queue::job, worker::job_context context) {
  ++seen->started;
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (int i = 0; i < 2'000 && !context.lease_lost(); ++i) {
    pause.expires_after(10ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
  if (context.lease_lost()) {
    ++seen->saw_lease_lost;
    co_return queue::outcome::retry("stopped at a checkpoint: lease lost");
  }
  co_return queue::outcome::done();
}

// One dispatcher in this process, on one io thread, with its own pool and DB threads.
struct running_dispatcher {
  running_dispatcher(const scratch_database& database, worker::dispatcher_settings settings)
      : url(bankworker::crypto::secret::copy_of(database.url())),
        connections([&] {
          db::pool_settings pool_config;
          pool_config.connections = 4;
          return database.worker_pool(std::move(pool_config));
        }()),
        jobs(*connections, queue::queue_settings{}),
        log(bankworker::service::log_level::warn),
        dispatcher(io, blocking, jobs, &url, settings, log) {
    dispatcher.add_handler("test.count", [this](queue::job job, worker::job_context context) {
      return count_job(&seen, 2ms, std::move(job), context);
    });
    dispatcher.add_handler("test.limited", [this](queue::job job, worker::job_context context) {
      return count_job(&limited_seen, 20ms, std::move(job), context);
    });
    dispatcher.add_handler("test.wait", [this](queue::job job, worker::job_context context) {
      return wait_for_cancel(&seen, std::move(job), context);
    });
  }

  void start() {
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [this](std::exception_ptr failure) {
      clean_exit = failure == nullptr;
    });
    runner = std::thread([this] { io.run(); });
  }

  void stop() {
    dispatcher.stop();
    runner.join();
    blocking.join();
  }

  ~running_dispatcher() {
    if (runner.joinable()) stop();
  }

  bankworker::crypto::secret url;
  std::unique_ptr<db::pool> connections;
  queue::job_queue jobs;
  bankworker::service::logger log;
  asio::io_context io;
  asio::thread_pool blocking{2};
  worker::dispatcher dispatcher;
  observed seen;
  observed limited_seen;
  std::thread runner;
  std::atomic<bool> clean_exit{false};
};

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}


// The dispatcher's claim rounds so far, read on its strand (its stats are strand-only).
std::uint64_t claim_rounds_now(running_dispatcher& running) {
  std::promise<std::uint64_t> rounds;
  asio::post(running.dispatcher.executor(), [&] { rounds.set_value(running.dispatcher.stats().claim_rounds); });
  return rounds.get_future().get();
}

}  // namespace

TEST_CASE("a NOTIFY wakes an idle dispatcher when polling is off", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.poll_interval = 0ms;
  settings.listen = true;
  running_dispatcher running(database, settings);
  running.start();
  REQUIRE(wait_until([&] { return running.dispatcher.listening(); }, 30s));
  std::this_thread::sleep_for(300ms);  // the start-up claim has come back empty and the loop sleeps

  for (int round = 0; round < 3; ++round) {
    const auto enqueued_at = std::chrono::steady_clock::now();
    running.jobs.enqueue(jobs_of("test.count", 1));
    REQUIRE(wait_until([&] { return running.seen.started.load() == round + 1; }, 5s));
    // Far below any poll interval a lost notification would have cost.
    CHECK(std::chrono::steady_clock::now() - enqueued_at < 1s);
  }
  running.stop();
  CHECK(running.clean_exit);
}

TEST_CASE("polling finds new jobs within its interval when notifications are off", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.poll_interval = 200ms;
  settings.listen = false;
  running_dispatcher running(database, settings);
  running.start();
  std::this_thread::sleep_for(300ms);
  running.jobs.enqueue(jobs_of("test.count", 3));
  // Well within the allowed poll interval of a second on a quiet machine; the margin is for
  // sanitizer builds on a loaded one. Without polling nothing would ever wake the loop here.
  CHECK(wait_until([&] { return running.seen.started.load() == 3; }, 3s));
  running.stop();
  CHECK(running.clean_exit);
}

TEST_CASE("the dispatcher runs 2,000 jobs once each and never more than its concurrency at a time", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.concurrency = 16;
  running_dispatcher running(database, settings);
  running.jobs.enqueue(jobs_of("test.count", 2'000));
  auto unknown = jobs_of("test.unknown_kind", 1);
  running.jobs.enqueue(unknown);
  running.start();
  REQUIRE(wait_until([&] { return scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state IN ('succeeded', 'failed')") == 2'001; }, 120s));
  running.stop();
  CHECK(running.seen.started == 2'000);
  CHECK(running.seen.most_in_flight <= 16);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded' AND attempt = 1") == 2'000);
  // A kind nobody handles is dead at once, not retried forever.
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'failed' AND failure = 'permanent'") == 1);
}

TEST_CASE("on SIGTERM a worker drains running jobs, releases what it cannot finish and exits 0", "[pg][dispatcher][process]") {
  const scratch_database database;
  insert_tenant(database);
  db::pool_settings pool_config;
  const auto connections = database.worker_pool(std::move(pool_config));
  queue::job_queue jobs(*connections, {});
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()}};

  SECTION("jobs that finish within the drain deadline are finished") {
    jobs.enqueue(jobs_of("test.effect", 4));
    child_process worker_process(QUEUE_DISPATCH_WORKER_BINARY,
                                 {"--concurrency", "4", "--job-ms", "1500", "--drain-ms", "10000"}, env);
    REQUIRE(worker_process.read_line(60s) == "ready");
    REQUIRE(wait_until([&] { return scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'running'") == 4; }, 30s));
    worker_process.signal(SIGTERM);
    CHECK(worker_process.wait(30s) == 0);
    CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded'") == 4);
    CHECK(scalar(database, "SELECT count(*) FROM public.effects") == 4);
  }
  SECTION("jobs that outlive the drain deadline are released, with no effect and no attempt spent") {
    jobs.enqueue(jobs_of("test.effect", 4));
    child_process worker_process(QUEUE_DISPATCH_WORKER_BINARY,
                                 {"--concurrency", "4", "--job-ms", "60000", "--drain-ms", "300"}, env);
    REQUIRE(worker_process.read_line(60s) == "ready");
    REQUIRE(wait_until([&] { return scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'running'") == 4; }, 30s));
    const auto signalled = std::chrono::steady_clock::now();
    worker_process.signal(SIGTERM);
    CHECK(worker_process.wait(30s) == 0);
    CHECK(std::chrono::steady_clock::now() - signalled < 10s);
    CHECK(worker_process.read_line(5s) == "stats claimed=4 finished=0 released=4");
    CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'available' AND attempt = 0") == 4);
    CHECK(scalar(database, "SELECT count(*) FROM public.effects") == 0);
  }
}

TEST_CASE("the dispatcher deletes finished jobs once they are past retention", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.rescue_interval = 50ms;
  settings.prune_interval = 100ms;
  settings.succeeded_retention = 0h;
  settings.dead_retention = 0h;
  running_dispatcher running(database, settings);
  running.jobs.enqueue(jobs_of("test.count", 50));
  running.start();
  CHECK(wait_until([&] { return running.seen.started.load() == 50; }, 30s));
  CHECK(wait_until([&] { return scalar(database, "SELECT count(*) FROM bankworker.jobs") == 0; }, 30s));
  running.stop();
}

TEST_CASE("a running job sees its cancellation at the next checkpoint and its outcome is not recorded",
          "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.heartbeat_interval = 200ms;
  running_dispatcher running(database, settings);
  const std::int64_t id = running.jobs.enqueue(jobs_of("test.wait", 1)).at(0);
  running.start();
  REQUIRE(wait_until([&] { return running.seen.started.load() == 1; }, 30s));
  const auto change = running.jobs.cancel(id);
  REQUIRE(change.has_value());
  CHECK(change->changed);
  CHECK(wait_until([&] { return running.seen.saw_lease_lost.load() == 1; }, 5s));
  running.stop();
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'cancelled' AND attempt = 1") == 1);
  CHECK(running.dispatcher.stats().lease_lost == 1);
}

TEST_CASE("a per-kind limit caps how many jobs of that kind run at once while other kinds fill the slots",
          "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.concurrency = 8;
  settings.kind_concurrency_max = {{"test.limited", 2}};
  running_dispatcher running(database, settings);
  running.jobs.enqueue(jobs_of("test.limited", 20));
  running.jobs.enqueue(jobs_of("test.count", 100));
  running.start();
  REQUIRE(wait_until([&] { return scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE state = 'succeeded'") == 120; }, 60s));
  running.stop();
  CHECK(running.limited_seen.started == 20);
  CHECK(running.limited_seen.most_in_flight <= 2);
  CHECK(running.seen.started == 100);
  // Jobs given back for being over the limit did not spend an attempt.
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE attempt = 1") == 120);
}

TEST_CASE("kinds a process cannot run are never claimed there and keep their attempts", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.concurrency = 8;
  settings.poll_interval = 100ms;
  settings.never_claim_kinds = {"test.limited"};
  running_dispatcher running(database, settings);
  running.jobs.enqueue(jobs_of("test.limited", 5));
  running.jobs.enqueue(jobs_of("test.count", 50));
  running.start();
  REQUIRE(wait_until([&] {
    return scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'test.count' AND state = 'succeeded'") == 50;
  }, 60s));
  // Several more poll rounds with nothing else to claim.
  std::this_thread::sleep_for(1s);
  running.stop();
  CHECK(running.limited_seen.started == 0);
  CHECK(scalar(database, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'test.limited' AND attempt = 0"
                         " AND state = 'available'") == 5);
}

TEST_CASE("a NOTIFY storm on the job channel costs at most one claim round per debounce interval", "[pg][dispatcher]") {
  const scratch_database database;
  insert_tenant(database);
  worker::dispatcher_settings settings;
  settings.poll_interval = 0ms;  // every claim round below is a start-up claim or a NOTIFY's
  settings.listen = true;
  // Longer than the default so that the bound is far from what the storm would cost without it
  // and timing on a loaded sanitizer build cannot blur it.
  settings.notify_debounce = 500ms;
  running_dispatcher running(database, settings);
  running.start();
  REQUIRE(wait_until([&] { return running.dispatcher.listening(); }, 30s));
  std::this_thread::sleep_for(300ms);  // the start-up claim has come back empty and the loop sleeps

  // 150 commits of 20 notifications each, 10 ms apart: anyone who can connect may do this.
  const std::uint64_t rounds_before = claim_rounds_now(running);
  const auto storm_started = std::chrono::steady_clock::now();
  {
    const auto attacker = database.connect_as_admin();
    for (int burst = 0; burst < 150; ++burst) {
      pqxx::work tx(*attacker);
      tx.exec_params("SELECT pg_notify($1, i::text) FROM generate_series(1, 20) i", std::string(queue::notify_channel));
      tx.commit();
      std::this_thread::sleep_for(10ms);
    }
  }
  const auto storm = std::chrono::steady_clock::now() - storm_started;
  std::this_thread::sleep_for(700ms);  // the last interval's folded wake comes and goes
  const std::uint64_t storm_rounds = claim_rounds_now(running) - rounds_before;
  // One per interval the storm spanned, plus the folded one after it. Without the debounce: about
  // one per burst, 150.
  const auto intervals = static_cast<std::uint64_t>(storm / settings.notify_debounce) + 1;
  INFO("storm lasted " << std::chrono::duration_cast<std::chrono::milliseconds>(storm).count() << " ms, "
                       << storm_rounds << " claim rounds");
  CHECK(storm_rounds <= intervals + 1);
  CHECK(storm_rounds >= 1);

  // After a quiet spell longer than the interval, a new job is claimed at once, not after it.
  const auto enqueued_at = std::chrono::steady_clock::now();
  running.jobs.enqueue(jobs_of("test.count", 1));
  REQUIRE(wait_until([&] { return running.seen.started.load() == 1; }, 5s));
  CHECK(std::chrono::steady_clock::now() - enqueued_at < settings.notify_debounce);
  // One enqueued right behind it (inside the interval) is still claimed, at the interval's end.
  const auto second_at = std::chrono::steady_clock::now();
  running.jobs.enqueue(jobs_of("test.count", 1));
  REQUIRE(wait_until([&] { return running.seen.started.load() == 2; }, 5s));
  CHECK(std::chrono::steady_clock::now() - second_at < settings.notify_debounce + 500ms);
  running.stop();
  CHECK(running.clean_exit);
}
