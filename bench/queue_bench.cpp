// The job queue under load, on the real database with default durability.
//
//   queue_bench [--jobs N] [--tenants T] [--concurrency C] [--processes P] [--latency-samples S]
//
// 1. Bulk-enqueues N no-op jobs spread over T tenants (one statement per job_batch_max jobs).
// 2. Starts P worker processes (this binary with --child), each a real dispatcher with fair claims,
//    leases, heartbeats and batched completion at concurrency C, and measures until all N are done.
// 3. At idle, one dispatcher in this process LISTENs; jobs are enqueued one at a time and the
//    time from the enqueue call to the handler starting is measured (p50, p99).
// It prints the figures and, last, one JSON line. BANKWORKER_DATABASE_URL selects the database
// (`make bench` points it at the private cluster); the schema is migrated if needed and the bench's
// own jobs are removed before and after.
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <pqxx/pqxx>

#include "bench/bench_support.hpp"
#include "core/limits.hpp"
#include "db/migrate.hpp"
#include "queue/queue.hpp"
#include "worker/dispatcher.hpp"

extern char** environ;

namespace {

using namespace bankworker;
namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

constexpr const char* bench_kind = "bench.noop";

struct options {
  std::size_t jobs = 50'000;
  std::size_t tenants = 10;
  std::uint32_t concurrency = 1000;
  std::size_t processes = 2;
  std::size_t latency_samples = 300;
  bool child = false;
};

// The value after option argv[i], a whole number within [low, high] (bench::option_number).
std::size_t number(int argc, char** argv, int& i, std::size_t low, std::size_t high) {
  const char* option = argv[i];
  if (i + 1 >= argc) {
    std::fprintf(stderr, "queue_bench: %s needs a value\n", option);
    std::exit(2);
  }
  return bench::option_number("queue_bench", option, argv[++i], low, high);
}

options parse(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--jobs") parsed.jobs = number(argc, argv, i, 1, 10'000'000);
    else if (arg == "--tenants") parsed.tenants = number(argc, argv, i, 1, 100'000);
    else if (arg == "--concurrency")
      parsed.concurrency = static_cast<std::uint32_t>(number(argc, argv, i, 1, limits::concurrency_max));
    else if (arg == "--processes") parsed.processes = number(argc, argv, i, 1, 64);
    else if (arg == "--latency-samples") parsed.latency_samples = number(argc, argv, i, 0, 100'000);
    else if (arg == "--child") parsed.child = true;
    else {
      std::fprintf(stderr, "usage: queue_bench [--jobs N] [--tenants T] [--concurrency C] [--processes P]"
                           " [--latency-samples S]\n");
      std::exit(2);
    }
  }
  return parsed;
}

std::string tenant_id(std::size_t index) {
  char text[40];
  std::snprintf(text, sizeof text, "be0c0000-0000-4000-8000-%012zx", index + 1);
  return text;
}

asio::awaitable<queue::outcome> noop(queue::job, worker::job_context) { co_return queue::outcome::done(); }

// `signal` outlives the io_context.
// When the latency probe's job started. The bench thread sleeps on the condition variable rather
// than spinning: on two cores a spinning waiter takes the CPU the database and the dispatcher need,
// and the latency it measures would be its own.
struct start_signal {
  std::mutex mutex;
  std::condition_variable started;
  std::int64_t at = 0;  // steady-clock ticks; 0 until the handler ran
};

asio::awaitable<queue::outcome> note_start(start_signal* signal, queue::job, worker::job_context) {
  const std::int64_t now = steady::now().time_since_epoch().count();
  {
    const std::lock_guard lock(signal->mutex);
    signal->at = now;
  }
  signal->started.notify_one();
  co_return queue::outcome::done();
}

std::unique_ptr<db::pool> open_pool(const std::string& url, std::size_t connections) {
  db::pool_settings settings;
  settings.connections = connections;
  return std::make_unique<db::pool>(crypto::secret::copy_of(url), std::move(settings));
}

worker::dispatcher_settings dispatcher_config(std::uint32_t concurrency) {
  worker::dispatcher_settings settings;
  settings.concurrency = concurrency;
  settings.drain_timeout = std::chrono::milliseconds(5'000);
  return settings;
}

// A worker process: one dispatcher at `concurrency` until SIGTERM.
int run_child(const std::string& url, std::uint32_t concurrency) {
  const auto connections = open_pool(url, 4);
  queue::job_queue jobs(*connections, queue::queue_settings{});
  const crypto::secret listen_url = crypto::secret::copy_of(url);
  bankworker::service::logger log(bankworker::service::log_level::warn);
  asio::io_context io;
  asio::thread_pool blocking(3);
  worker::dispatcher dispatcher(io, blocking, jobs, &listen_url, dispatcher_config(concurrency), log);
  dispatcher.add_handler(bench_kind, [](queue::job job, worker::job_context context) {
    return noop(std::move(job), context);
  });
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&dispatcher](const boost::system::error_code& error, int) {
    if (!error) dispatcher.stop();
  });
  asio::co_spawn(dispatcher.executor(), dispatcher.run(), [&signals](std::exception_ptr) { signals.cancel(); });
  io.run();
  blocking.join();
  return 0;
}

// Cheap enough to ask every few milliseconds: two index probes (ready and running jobs), where a
// count of finished jobs would scan the table and steal a core from the workers being measured.
bool queue_drained(pqxx::connection& admin) {
  pqxx::work tx(admin);
  return tx.exec_params1("SELECT NOT EXISTS (SELECT 1 FROM bankworker.jobs WHERE state IN ('available', 'retryable'))"
                         " AND NOT EXISTS (SELECT 1 FROM bankworker.jobs WHERE state = 'running')")[0]
      .as<bool>();
}

long count_done(pqxx::connection& admin) {
  pqxx::work tx(admin);
  return tx.exec_params1("SELECT count(*) FROM bankworker.jobs WHERE kind = $1 AND state = 'succeeded'", bench_kind)[0]
      .as<long>();
}

void remove_bench_jobs(pqxx::connection& admin) {
  pqxx::work tx(admin);
  tx.exec_params("DELETE FROM bankworker.jobs WHERE kind = $1", bench_kind);
  tx.commit();
}

double percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(fraction * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  const options opts = parse(argc, argv);
  const char* url_env = std::getenv("BANKWORKER_DATABASE_URL");
  if (url_env == nullptr || *url_env == '\0') {
    std::fprintf(stderr, "queue_bench: set BANKWORKER_DATABASE_URL (make bench sets it to the private cluster)\n");
    return 2;
  }
  const std::string url = url_env;
  if (opts.child) return run_child(url, opts.concurrency);

  pqxx::connection admin(url);
  db::apply_migrations(admin, db::embedded_migrations());
  {
    pqxx::work tx(admin);
    for (std::size_t i = 0; i < opts.tenants; ++i) {
      tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 'bench') ON CONFLICT DO NOTHING",
                     tenant_id(i));
    }
    tx.commit();
  }
  remove_bench_jobs(admin);
  {
    pqxx::nontransaction tx(admin);
    tx.exec("VACUUM ANALYZE bankworker.jobs");
  }

  // 1. Bulk enqueue.
  const auto connections = open_pool(url, 4);
  queue::job_queue jobs(*connections, queue::queue_settings{});
  std::vector<queue::new_job> batch(opts.jobs);
  for (std::size_t i = 0; i < opts.jobs; ++i) {
    batch[i].tenant = *core::uuid::parse(tenant_id(i % opts.tenants));
    batch[i].kind = bench_kind;
  }
  const auto enqueue_start = steady::now();
  jobs.enqueue(batch);
  const double enqueue_s = std::chrono::duration<double>(steady::now() - enqueue_start).count();
  const double enqueue_rate = static_cast<double>(opts.jobs) / enqueue_s;
  std::printf("enqueue: %zu jobs over %zu tenants in %.3f s = %.0f jobs/s\n", opts.jobs, opts.tenants, enqueue_s,
              enqueue_rate);
  {
    pqxx::nontransaction tx(admin);
    tx.exec("ANALYZE bankworker.jobs");
  }

  // 2. Claim + complete in P processes.
  const std::string concurrency_text = std::to_string(opts.concurrency);
  std::vector<pid_t> children;
  const std::string database = pqxx::nontransaction(admin).exec1("SELECT current_database()")[0].as<std::string>();
  const double database_cpu_before = bench::database_backends_cpu_s(database);
  const auto run_start = steady::now();
  const bench::cpu_sample cpu_before = bench::sample_cpu();
  for (std::size_t p = 0; p < opts.processes; ++p) {
    std::vector<std::string> args = {argv[0], "--child", "--concurrency", concurrency_text};
    std::vector<char*> child_argv;
    for (auto& arg : args) child_argv.push_back(arg.data());
    child_argv.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawn(&pid, argv[0], nullptr, nullptr, child_argv.data(), environ) != 0) {
      std::fprintf(stderr, "queue_bench: cannot start a worker process\n");
      return 1;
    }
    children.push_back(pid);
  }
  const auto run_deadline = run_start + std::chrono::minutes(10);
  bool child_died = false;
  while (!queue_drained(admin) && steady::now() < run_deadline && !child_died) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (pid_t& pid : children) {
      int status = 0;
      if (pid > 0 && ::waitpid(pid, &status, WNOHANG) == pid) {
        std::fprintf(stderr, "queue_bench: a worker process ended before the queue was drained (%s %d)\n",
                     WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        pid = 0;
        child_died = true;
      }
    }
  }
  const double run_s = std::chrono::duration<double>(steady::now() - run_start).count();
  const bench::cpu_share host = bench::cpu_between(cpu_before, bench::sample_cpu());
  // Read before the worker processes end: their CPU and that of the backends serving them (the
  // bench's own polling included, a small part).
  double workers_cpu_s = 0;
  for (const pid_t pid : children) {
    if (pid > 0) workers_cpu_s += bench::process_cpu_s(std::to_string(pid));
  }
  const double database_cpu_s = bench::database_backends_cpu_s(database) - database_cpu_before;
  const long done = count_done(admin);
  for (const pid_t pid : children) {
    if (pid > 0) ::kill(pid, SIGTERM);
  }
  for (const pid_t pid : children) {
    int status = 0;
    if (pid > 0) ::waitpid(pid, &status, 0);
  }
  if (child_died) {
    remove_bench_jobs(admin);
    return 1;
  }
  const double run_rate = static_cast<double>(done) / run_s;
  std::printf("claim+complete: %ld jobs in %.3f s with %zu processes x concurrency %u = %.0f jobs/s\n", done, run_s,
              opts.processes, opts.concurrency, run_rate);
  if (done < static_cast<long>(opts.jobs)) std::printf("WARNING: only %ld of %zu jobs finished\n", done, opts.jobs);
  std::printf("host CPU during claim+complete: %.1f %% stolen by the hypervisor, %.1f %% idle\n", host.steal_pct,
              host.idle_pct);
  std::printf("CPU per job during claim+complete: worker processes %.1f us, PostgreSQL backends %.1f us\n",
              bench::us_per(workers_cpu_s, done), bench::us_per(database_cpu_s, done));

  // 3. Enqueue-to-start latency at idle, one job at a time, woken by NOTIFY. "Idle" includes a
  // table that autovacuum has caught up with: the finished bench jobs are removed and vacuumed
  // first, as they would be by retention and autovacuum on a quiet system.
  remove_bench_jobs(admin);
  {
    pqxx::nontransaction tx(admin);
    tx.exec("VACUUM ANALYZE bankworker.jobs");
  }
  std::vector<double> latencies_ms;
  std::vector<double> after_commit_ms;
  {
    start_signal signal;
    const crypto::secret listen_url = crypto::secret::copy_of(url);
    bankworker::service::logger log(bankworker::service::log_level::warn);
    asio::io_context io;
    asio::thread_pool blocking(2);
    worker::dispatcher_settings settings = dispatcher_config(8);
    worker::dispatcher dispatcher(io, blocking, jobs, &listen_url, settings, log);
    dispatcher.add_handler(bench_kind, [&signal](queue::job job, worker::job_context context) {
      return note_start(&signal, std::move(job), context);
    });
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [](std::exception_ptr) {});
    std::thread runner([&io] { io.run(); });
    for (int i = 0; i < 600 && !dispatcher.listening(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::vector<queue::new_job> one(1);
    one[0].tenant = *core::uuid::parse(tenant_id(0));
    one[0].kind = bench_kind;
    for (std::size_t i = 0; i < opts.latency_samples; ++i) {
      {
        const std::lock_guard lock(signal.mutex);
        signal.at = 0;
      }
      const auto before = steady::now();
      jobs.enqueue(one);
      const auto committed = steady::now();
      std::int64_t started_at = 0;
      {
        std::unique_lock lock(signal.mutex);
        signal.started.wait_until(lock, committed + std::chrono::seconds(5), [&signal] { return signal.at != 0; });
        started_at = signal.at;
      }
      if (started_at != 0) {
        const steady::time_point at{steady::duration(started_at)};
        latencies_ms.push_back(std::chrono::duration<double, std::milli>(at - before).count());
        after_commit_ms.push_back(std::chrono::duration<double, std::milli>(at - committed).count());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // idle between jobs
    }
    dispatcher.stop();
    runner.join();
    blocking.join();
  }
  const double p50 = percentile(latencies_ms, 0.50);
  const double p99 = percentile(latencies_ms, 0.99);
  std::printf("latency at idle (enqueue call -> handler start, %zu samples): p50 %.3f ms, p99 %.3f ms\n",
              latencies_ms.size(), p50, p99);
  std::printf("latency at idle (enqueue committed -> handler start): p50 %.3f ms, p99 %.3f ms\n",
              percentile(after_commit_ms, 0.50), percentile(after_commit_ms, 0.99));

  remove_bench_jobs(admin);
  rusage self{};
  rusage kids{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &kids);
  const double rss_mb = static_cast<double>(std::max(self.ru_maxrss, kids.ru_maxrss)) / 1024.0;
  std::printf("peak RSS: %.1f MB (largest process)\n", rss_mb);
  std::printf("{\"bench\":\"queue\",\"jobs_per_s\":%.0f,\"enqueue_jobs_per_s\":%.0f,\"latency_p50_ms\":%.3f,"
              "\"latency_p99_ms\":%.3f,\"rss_mb\":%.1f,\"host_steal_pct\":%.1f,\"host_idle_pct\":%.1f,"
              "\"worker_cpu_us_per_job\":%.1f,\"database_cpu_us_per_job\":%.1f}\n",
              run_rate, enqueue_rate, p50, p99, rss_mb, host.steal_pct, host.idle_pct, bench::us_per(workers_cpu_s, done),
              bench::us_per(database_cpu_s, done));
  return done < static_cast<long>(opts.jobs) ? 1 : 0;
}
