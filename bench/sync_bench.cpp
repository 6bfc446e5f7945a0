// Plaid transactions sync through the real worker path, simulator included.
//
//   sync_bench [--items N] [--transactions M] [--tenants T] [--concurrency C] [--rate-limiter 0|1]
//
// Starts plaid_sim with N items of M transactions each, links every item to a connection (sealed
// access token, as plaid.link leaves it; not timed), then enqueues one plaid.sync per connection
// and runs the real dispatcher with the real handlers — HTTP client, page parsing and
// normalisation, the walk buffer, the COPY-staged apply, the audit row and the completion — until
// every connection has synced. It prints transactions stored per second, the CPU each part used
// per transaction (worker, PostgreSQL backends, simulator) and peak RSS; the last line is one JSON
// object. BANKWORKER_DATABASE_URL selects the cluster (`make bench` points it at
// the private one); the bench works in a database of its own and drops it afterwards.
#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <curl/curl.h>
#include <pqxx/pqxx>

#include "bench/bench_support.hpp"
#include "bench/plaid_seed.hpp"
#include "connectors/http/client.hpp"
#include "connectors/plaid/client.hpp"
#include "connectors/stripe/store.hpp"
#include "core/limits.hpp"
#include "db/currencies.hpp"
#include "db/migrate.hpp"
#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "worker/dispatcher.hpp"
#include "connectors/plaid/jobs.hpp"

namespace {

using namespace bankworker;
namespace asio = boost::asio;
using bench::seconds_since;

struct options {
  std::size_t items = 100;
  std::size_t transactions = 1'000;
  std::size_t tenants = 10;
  // Syncs at once. On this 2-core machine 4 gave the best figure (interleaved runs: 41-50k tx/s
  // against 39-45k at 8): eight backends writing at once cost about a fifth more PostgreSQL CPU per
  // transaction (26-33 us against 31-36 us), and at 2 or 3 the cores sat idle during page fetches.
  std::uint32_t concurrency = 4;
  bool rate_limiter = true;  // the shared /transactions/sync limiter, as in production
};

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "sync_bench: %s needs a value\n", argv[i]);
      std::exit(2);
    }
    const std::string_view text = argv[++i];
    const auto value = [&](std::size_t low, std::size_t high) {
      return bench::option_number("sync_bench", name, text, low, high);
    };
    if (name == "--rate-limiter") o.rate_limiter = value(0, 1) == 1;
    else if (name == "--items") o.items = value(1, 1'000'000);
    else if (name == "--transactions") o.transactions = value(1, 1'000'000);
    else if (name == "--tenants") o.tenants = value(1, 1'000'000);
    else if (name == "--concurrency") o.concurrency = static_cast<std::uint32_t>(value(1, limits::concurrency_max));
    else {
      std::fprintf(stderr, "sync_bench: unknown option %s\n", name.c_str());
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const options o = parse_options(argc, argv);
  const std::string url = bench::cluster_url("sync_bench");
  std::optional<bench::scratch_database> scratch;
  scratch.emplace(url, "bw_sync_bench");
  const std::string bench_url = scratch->url();
  double per_s = 0;
  double seconds = 0;
  long stored = 0;
  bench::cpu_share host;
  // CPU seconds of the timed phase: this process (the worker side), the simulator, the backends.
  double worker_cpu_s = 0;
  double simulator_cpu_s = 0;
  double database_cpu_s = 0;
  try {
    {
      pqxx::connection owner(bench_url);
      db::apply_migrations(owner, db::embedded_migrations());
    }
    test::child_process sim(PLAID_SIM_BINARY,
                            {"--port", "0", "--items", std::to_string(o.items), "--transactions",
                             std::to_string(o.transactions)},
                            {});
    const std::string sim_url = test::base_url_from(sim);
    db::pool_settings pool_config;
    pool_config.connections = o.concurrency + 4;
    db::pool connections(crypto::secret::copy_of(bench_url), pool_config);
    db::key_store keys(crypto::root_key_ring(std::make_unique<crypto::file_root_key>(crypto::secret::random(32))));
    const std::vector<bench::linked_connection> linked =
        bench::link_sim_items(connections, keys, sim_url, o.tenants);
    core::currency_table currencies;
    {
      auto lease = connections.checkout();
      pqxx::read_transaction tx(lease.connection());
      currencies = db::load_currencies(tx);
    }

    queue::job_queue jobs(connections, {});
    asio::io_context io;
    asio::thread_pool blocking(pool_config.connections);
    bankworker::service::logger log(bankworker::service::log_level::warn);
    bankworker::service::metrics_registry metrics;
    connectors::http::client http(io, {});
    plaid::client_settings plaid_config;
    plaid_config.base_url = sim_url;
    plaid::client api(http, currencies, plaid_config, crypto::secret::copy_of("bankworker-sim-client"),
                      crypto::secret::copy_of("bankworker-sim-secret"));
    plaid::plaid_job_settings job_config;
    if (!o.rate_limiter) {
      job_config.sync_client_per_minute = 0;
      job_config.sync_item_per_minute = 0;
    }
    plaid::plaid_jobs handlers(connections, keys, api, metrics, log, job_config);
    const crypto::secret listen_url = crypto::secret::copy_of(bench_url);
    worker::dispatcher_settings dispatch_config;
    dispatch_config.concurrency = o.concurrency;
    dispatch_config.poll_interval = std::chrono::milliseconds(100);
    worker::dispatcher dispatcher(io, blocking, jobs, &listen_url, dispatch_config, log);
    dispatcher.add_handler(std::string(plaid::plaid_sync_kind), handlers.sync_handler());
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [](std::exception_ptr) {});
    std::thread io_thread([&io] { io.run(); });
    // On an error below, stop the runtime so the thread joins and the error is printed, not lost
    // to std::terminate.
    struct join_on_exit {
      asio::io_context& io;
      std::thread& thread;
      ~join_on_exit() {
        if (!thread.joinable()) return;
        io.stop();
        thread.join();
      }
    } io_guard{io, io_thread};

    pqxx::connection admin(bench_url);
    const auto start = std::chrono::steady_clock::now();
    const bench::cpu_sample cpu_before = bench::sample_cpu();
    const std::string sim_pid = std::to_string(sim.pid());
    const double worker_cpu_before = bench::process_cpu_s("self");
    const double simulator_cpu_before = bench::process_cpu_s(sim_pid);
    const double database_cpu_before = bench::database_backends_cpu_s(scratch->name());
    bench::enqueue_syncs(connections, linked);
    const long expected = static_cast<long>(linked.size());
    bench::wait_until_synced(admin, expected, std::chrono::minutes(10));
    seconds = seconds_since(start);
    host = bench::cpu_between(cpu_before, bench::sample_cpu());
    worker_cpu_s = bench::process_cpu_s("self") - worker_cpu_before;
    simulator_cpu_s = bench::process_cpu_s(sim_pid) - simulator_cpu_before;
    database_cpu_s = bench::database_backends_cpu_s(scratch->name()) - database_cpu_before;
    dispatcher.stop();
    io_thread.join();
    http.shutdown();
    blocking.join();
    stored = bench::count_of(admin, "SELECT count(*) FROM bankworker.transactions WHERE removed_at IS NULL");
    const long failed = bench::count_of(admin, "SELECT count(*) FROM bankworker.jobs WHERE state IN ('failed', 'retryable')");
    per_s = static_cast<double>(stored) / seconds;
    std::printf("sync: %zu items x %zu transactions over %zu tenants, concurrency %u, shared rate limiter %s\n",
                o.items, o.transactions, o.tenants, o.concurrency, o.rate_limiter ? "on" : "off");
    std::printf("stored %ld transactions in %.2f s = %.0f transactions/s (%ld jobs failed or retrying)\n", stored,
                seconds, per_s, failed);
    std::printf("host CPU while syncing: %.1f %% stolen by the hypervisor, %.1f %% idle\n", host.steal_pct,
                host.idle_pct);
    std::printf("CPU per transaction while syncing: worker %.1f us, PostgreSQL backends %.1f us, simulator %.1f us\n",
                bench::us_per(worker_cpu_s, stored), bench::us_per(database_cpu_s, stored),
                bench::us_per(simulator_cpu_s, stored));
    sim.signal(SIGTERM);
    sim.wait(std::chrono::seconds(10));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "sync_bench: %s\n", error.what());
  }
  scratch.reset();
  rusage self{};
  ::getrusage(RUSAGE_SELF, &self);
  const double rss_mb = static_cast<double>(self.ru_maxrss) / 1024.0;
  std::printf("peak RSS of the worker side: %.1f MB\n", rss_mb);
  std::printf("{\"bench\":\"sync\",\"transactions_per_s\":%.0f,\"transactions\":%ld,\"seconds\":%.3f,\"rss_mb\":%.1f,"
              "\"host_steal_pct\":%.1f,\"host_idle_pct\":%.1f,\"worker_cpu_us_per_tx\":%.1f,"
              "\"database_cpu_us_per_tx\":%.1f,\"simulator_cpu_us_per_tx\":%.1f}\n",
              per_s, stored, seconds, rss_mb, host.steal_pct, host.idle_pct, bench::us_per(worker_cpu_s, stored),
              bench::us_per(database_cpu_s, stored), bench::us_per(simulator_cpu_s, stored));
  return stored > 0 ? 0 : 1;
}
