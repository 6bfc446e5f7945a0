// Scale-out (issue #18): 1, 2 and 4 `bankworker run` processes against one PostgreSQL, so a user
// can see where one database (and one host) runs out.
//
//   scale_bench [--processes 1,2,4] [--seconds S] [--connections C] [--items N] [--transactions M]
//               [--tenants T] [--concurrency N]
//
// For each process count P, on a scratch database of its own:
// 1. Migrates it and makes a tenant and its webhook secret with the real CLI (as webhook_load
//    does), T more tenants, and links each of plaid_sim's N items (M transactions each) to a
//    connection with a sealed access token (as sync_bench does; not timed).
// 2. Starts P `bankworker run` processes, each with its own ports and process id, the worker's
//    default pool and concurrency (or --concurrency), all configured for the Plaid simulator.
// 3. Webhooks: C keep-alive connections, split evenly over the P processes, send pre-signed ~2 KB
//    Stripe events (1 % forged) for S seconds; then rows stored must equal 2xx answers, no forged
//    event stored. Prints stored/s and posted/s (posted by the P processes' posters meanwhile),
//    then waits (bounded) until the posting backlog is gone so the next phase runs alone.
// 4. Syncs: one plaid.sync per connection, enqueued at once; transactions stored per second until
//    every connection has synced; rows must equal N × M.
// In each phase: CPU per unit of the P workers together (/proc/PID/stat), of the scratch database's
// PostgreSQL backends and of this process (the loader; in the sync phase the simulator's too), the
// host's idle and steal, and the peak number of connections to the scratch database (sampled
// every 100 ms from pg_stat_activity: the workers' own, application_name bankworker*, and all).
// It prints one table per phase and, last, one JSON line; the exit status is 1 when a count
// disagrees. BANKWORKER_DATABASE_URL selects the cluster (`make bench` points it at the private
// one); each round's database and login are dropped afterwards.
//
// Figures: docs/SCALING.md ("Measured: 1, 2 and 4 processes").
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <curl/curl.h>
#include <pqxx/pqxx>

#include "bench/bench_support.hpp"
#include "bench/plaid_seed.hpp"
#include "bench/webhook_events.hpp"
#include "core/limits.hpp"
#include "crypto/root_key.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "tests/support/child.hpp"
#include "tests/support/process.hpp"

namespace {

using namespace bankworker;
using steady = std::chrono::steady_clock;

constexpr std::size_t processes_max = 16;
constexpr std::size_t forged_percent = 1;
// Pre-signed events per second of load: above what two cores store (about 7,000/s).
constexpr std::size_t events_per_s_max = 25'000;
constexpr auto posting_drain_limit = std::chrono::seconds(60);
constexpr auto sync_limit = std::chrono::minutes(10);
constexpr auto connection_sample_interval = std::chrono::milliseconds(100);
constexpr const char* plaid_client_id = "bankworker-sim-client";
constexpr const char* plaid_secret = "bankworker-sim-secret";

struct options {
  std::vector<std::size_t> processes{1, 2, 4};
  std::size_t seconds = 20;
  std::size_t connections = 64;
  // 300 items × 1,000 transactions: about 6 s of syncing on two cores, long enough to sample.
  std::size_t items = 300;
  std::size_t transactions = 1'000;
  std::size_t tenants = 10;
  std::size_t concurrency = 0;  // 0: the worker's default (BANKWORKER_CONCURRENCY unset)
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "scale_bench: %s\nusage: scale_bench [--processes 1,2,4] [--seconds S] [--connections C] [--items N]"
               " [--transactions M] [--tenants T] [--concurrency N]\n",
               why);
  std::exit(2);
}

std::vector<std::size_t> parse_process_counts(std::string_view text) {
  std::vector<std::size_t> counts;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    counts.push_back(bench::option_number("scale_bench", "--processes", text.substr(start, comma - start), 1,
                                          processes_max));
    start = comma + 1;
  }
  return counts;
}

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view name = argv[i];
    if (i + 1 >= argc) usage("every option needs a value");
    const std::string_view value = argv[++i];
    const auto number = [&](std::size_t low, std::size_t high) {
      return bench::option_number("scale_bench", name, value, low, high);
    };
    if (name == "--processes") o.processes = parse_process_counts(value);
    else if (name == "--seconds") o.seconds = number(1, 3'600);
    else if (name == "--connections") o.connections = number(1, 1'000);
    else if (name == "--items") o.items = number(1, 100'000);
    else if (name == "--transactions") o.transactions = number(1, 100'000);
    else if (name == "--tenants") o.tenants = number(1, 10'000);
    else if (name == "--concurrency") o.concurrency = number(0, limits::concurrency_max);
    else usage("unknown option");
  }
  return o;
}

// The peak number of connections to one database while it runs: a thread sampling
// pg_stat_activity through a connection to the cluster's own database (so it is not counted).
class connection_sampler {
 public:
  connection_sampler(const std::string& cluster_url, std::string database)
      : admin_(cluster_url), database_(std::move(database)), thread_([this] { sample_until_stopped(); }) {}
  connection_sampler(const connection_sampler&) = delete;
  connection_sampler& operator=(const connection_sampler&) = delete;
  ~connection_sampler() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  long workers_peak() const { return workers_peak_; }  // application_name bankworker*
  long all_peak() const { return all_peak_; }          // every session on the database

 private:
  void sample_until_stopped() {
    try {
      while (!stop_) {
        pqxx::nontransaction tx(admin_);
        const pqxx::row counts = tx.exec_params1(
            "SELECT count(*) FILTER (WHERE application_name LIKE 'bankworker%'), count(*) FROM pg_stat_activity"
            " WHERE datname = $1",
            database_);
        workers_peak_ = std::max(workers_peak_.load(), counts[0].as<long>());
        all_peak_ = std::max(all_peak_.load(), counts[1].as<long>());
        tx.commit();
        std::this_thread::sleep_for(connection_sample_interval);
      }
    } catch (const std::exception& error) {
      std::fprintf(stderr, "scale_bench: the connection sampler stopped: %s\n", error.what());
    }
  }

  pqxx::connection admin_;
  std::string database_;
  std::atomic<bool> stop_{false};
  std::atomic<long> workers_peak_{0};
  std::atomic<long> all_peak_{0};
  std::thread thread_;  // last: it starts once everything it reads is made
};

// P `bankworker run` processes on one database, each with its own webhook and admin ports.
struct fleet {
  std::vector<std::unique_ptr<test::child_process>> processes;
  std::vector<std::uint16_t> ports;
  std::vector<std::uint16_t> admin_ports;

  fleet(std::size_t count, const std::map<std::string, std::string>& env) {
    for (std::size_t i = 0; i < count; ++i) {
      auto own = env;
      ports.push_back(test::free_loopback_port());
      admin_ports.push_back(test::free_loopback_port());
      own["BANKWORKER_HTTP_LISTEN"] = "127.0.0.1:" + std::to_string(ports.back());
      own["BANKWORKER_ADMIN_LISTEN"] = "127.0.0.1:" + std::to_string(admin_ports.back());
      processes.push_back(std::make_unique<test::child_process>(BANKWORKER_BINARY, std::vector<std::string>{"run"}, own));
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (!bench::wait_until_ready(admin_ports[i], "/readyz", *processes[i])) {
        throw std::runtime_error("bankworker run " + std::to_string(i + 1) + " did not become ready");
      }
    }
  }
  double cpu_s() const {
    double total = 0;
    for (const auto& process : processes) total += bench::process_cpu_s(std::to_string(process->pid()));
    return total;
  }
  // SIGTERM to all, then wait for each (drain timeout 5 s).
  void stop() {
    for (auto& process : processes) process->signal(SIGTERM);
    for (auto& process : processes) process->wait(std::chrono::seconds(30));
  }
};

// CPU seconds used so far by each part, and the host's counters.
struct cpu_snapshot {
  double workers_s = 0;
  double database_s = 0;
  double loader_s = 0;     // this process
  double simulator_s = 0;  // plaid_sim
  bench::cpu_sample host;
};

cpu_snapshot take_cpu(const fleet& workers, const std::string& database, const std::string& simulator_pid) {
  return {workers.cpu_s(), bench::database_backends_cpu_s(database), bench::process_cpu_s("self"),
          bench::process_cpu_s(simulator_pid), bench::sample_cpu()};
}

// One phase at one process count.
struct phase_result {
  double seconds = 0;
  long units = 0;            // events stored, or transactions stored
  long posted = 0;           // webhooks: events posted to the ledger during the load
  long unposted = 0;         // webhooks: events still to post at the end of the load
  double drain_s = 0;        // webhooks: how long the posting backlog took to clear afterwards
  double p99_ms = 0;         // webhooks: latency of stored events
  std::size_t requests = 0;  // webhooks: requests sent (CPU per request divides by these)
  double workers_cpu_s = 0;
  double database_cpu_s = 0;
  double loader_cpu_s = 0;
  double simulator_cpu_s = 0;
  bench::cpu_share host;
  long worker_connections_peak = 0;
  long connections_peak = 0;
  bool consistent = false;
  std::string problem;  // why it is not consistent

  double per_s() const { return seconds > 0 ? static_cast<double>(units) / seconds : 0; }
  // CPU per unit divides by requests for webhooks (as webhook_load does), by rows for syncs.
  long divisor() const { return requests > 0 ? static_cast<long>(requests) : units; }
};

void record_cpu(phase_result& r, const cpu_snapshot& before, const cpu_snapshot& after) {
  r.workers_cpu_s = after.workers_s - before.workers_s;
  r.database_cpu_s = after.database_s - before.database_s;
  r.loader_cpu_s = after.loader_s - before.loader_s;
  r.simulator_cpu_s = after.simulator_s - before.simulator_s;
  r.host = bench::cpu_between(before.host, after.host);
}

// What one round shares: the database, its workers and who to measure.
struct round_context {
  const options& o;
  const std::string& cluster_url;
  const std::string& database;
  pqxx::connection& admin;  // to the scratch database, for counting
  fleet& workers;
  const std::string& simulator_pid;
  const std::string& webhook_path;
  const std::string& webhook_secret;
};

// Waits until the posters have posted every stored event (bounded); the seconds it took.
double wait_for_posting(pqxx::connection& admin) {
  const auto start = steady::now();
  while (bench::count_of(admin, "SELECT count(*) FROM bankworker.stripe_events WHERE state IN ('received', 'fetching')") >
             0 &&
         steady::now() - start < posting_drain_limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return bench::seconds_since(start);
}

phase_result measure_webhooks(const round_context& c) {
  const bench::event_set events =
      bench::sign_events(c.o.seconds * events_per_s_max, forged_percent, c.webhook_secret);
  phase_result r;
  const cpu_snapshot before = take_cpu(c.workers, c.database, c.simulator_pid);
  connection_sampler sampler(c.cluster_url, c.database);
  bench::load_result load = bench::run_load(events, c.webhook_path, c.workers.ports, c.o.connections,
                                            std::chrono::seconds(c.o.seconds));
  sampler.stop();
  record_cpu(r, before, take_cpu(c.workers, c.database, c.simulator_pid));
  r.seconds = load.seconds;
  r.requests = load.sent;
  r.worker_connections_peak = sampler.workers_peak();
  r.connections_peak = sampler.all_peak();
  r.units = bench::count_of(c.admin, "SELECT count(*) FROM bankworker.stripe_events");
  r.posted = bench::count_of(c.admin, "SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'");
  r.unposted = bench::count_of(
      c.admin, "SELECT count(*) FROM bankworker.stripe_events WHERE state IN ('received', 'fetching')");
  const long forged_stored =
      bench::count_of(c.admin, "SELECT count(*) FROM bankworker.stripe_events WHERE event_id LIKE 'evt_wlf%'");
  std::sort(load.latencies_us.begin(), load.latencies_us.end());
  r.p99_ms = bench::percentile_ms(load.latencies_us, 0.99);
  r.consistent = r.units == static_cast<long>(load.accepted) && forged_stored == 0 && load.forged_accepted == 0 &&
                 load.other_status == 0 && !load.ran_out;
  if (!r.consistent) {
    r.problem = std::to_string(r.units) + " rows for " + std::to_string(load.accepted) + " 2xx answers, " +
                std::to_string(forged_stored) + " forged stored, " + std::to_string(load.forged_accepted) +
                " forged not 400, " + std::to_string(load.other_status) + " genuine not 2xx" +
                (load.ran_out ? ", ran out of events" : "");
  }
  r.drain_s = wait_for_posting(c.admin);
  return r;
}

phase_result measure_syncs(const round_context& c, db::pool& connections,
                           const std::vector<bench::linked_connection>& linked) {
  phase_result r;
  const cpu_snapshot before = take_cpu(c.workers, c.database, c.simulator_pid);
  connection_sampler sampler(c.cluster_url, c.database);
  const auto start = steady::now();
  bench::enqueue_syncs(connections, linked);
  const bool all_synced = bench::wait_until_synced(c.admin, static_cast<long>(linked.size()), sync_limit);
  r.seconds = bench::seconds_since(start);
  sampler.stop();
  record_cpu(r, before, take_cpu(c.workers, c.database, c.simulator_pid));
  r.worker_connections_peak = sampler.workers_peak();
  r.connections_peak = sampler.all_peak();
  r.units = bench::count_of(c.admin, "SELECT count(*) FROM bankworker.transactions WHERE removed_at IS NULL");
  const long expected = static_cast<long>(c.o.items * c.o.transactions);
  const long failed =
      bench::count_of(c.admin, "SELECT count(*) FROM bankworker.jobs WHERE state IN ('failed', 'retryable')");
  r.consistent = all_synced && r.units == expected && failed == 0;
  if (!r.consistent) {
    r.problem = std::to_string(r.units) + " transactions stored of " + std::to_string(expected) + ", " +
                std::to_string(failed) + " jobs failed or retrying" + (all_synced ? "" : ", not every connection synced");
  }
  return r;
}

struct round_result {
  std::size_t processes = 0;
  phase_result webhooks;
  phase_result syncs;
};

// The environment every worker of a round runs with (BANKWORKER_DATABASE_URL is added by the set-up).
std::map<std::string, std::string> worker_env(const options& o, const std::filesystem::path& directory,
                                              const std::string& sim_url) {
  std::map<std::string, std::string> env = {{"BANKWORKER_ROOT_KEY_FILE", (directory / "root-key").string()},
                                            {"BANKWORKER_PLAID_BASE_URL", sim_url},
                                            {"BANKWORKER_PLAID_CLIENT_ID", plaid_client_id},
                                            {"BANKWORKER_PLAID_SECRET", plaid_secret},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "warn"}};
  if (o.concurrency > 0) env["BANKWORKER_CONCURRENCY"] = std::to_string(o.concurrency);
  return env;
}

// One round: a fresh database, P workers, both phases, everything dropped afterwards.
round_result run_round(const options& o, std::size_t processes, const std::string& cluster_url,
                       const std::filesystem::path& directory, const std::string& sim_url,
                       const std::string& simulator_pid, const std::string& secret) {
  round_result result{processes, {}, {}};
  // The runtime login outlives its database only until the round ends, however it ends.
  struct login_dropper {
    const std::string& cluster_url;
    std::string login;
    ~login_dropper() { bench::drop_login(cluster_url, login); }
  } const runtime{cluster_url, "bw_scale_bench_" + std::to_string(::getpid()) + "_runtime"};
  const std::string& runtime_login = runtime.login;
  {
    bench::scratch_database scratch(cluster_url, "bw_scale_bench");
    const bench::worker_setup setup = bench::set_up_worker(BANKWORKER_BINARY, scratch.url(), runtime_login,
                                                           worker_env(o, directory, sim_url), "scale webhooks",
                                                           directory / "webhook-secret");
    db::pool_settings pool_config;
    pool_config.connections = 2;
    pool_config.application_name = "scale_bench";
    db::pool connections(crypto::secret::copy_of(scratch.url()), pool_config);
    db::key_store keys(crypto::root_key_ring(crypto::file_root_key::load(directory / "root-key")));
    const std::vector<bench::linked_connection> linked =
        bench::link_sim_items(connections, keys, sim_url, o.tenants);
    pqxx::connection admin(scratch.url());
    fleet workers(processes, setup.env);
    const std::string path = "/webhooks/stripe/" + setup.tenant;
    const round_context context{o, cluster_url, scratch.name(), admin, workers, simulator_pid, path, secret};
    result.webhooks = measure_webhooks(context);
    result.syncs = measure_syncs(context, connections, linked);
    workers.stop();
  }
  return result;
}

void print_webhooks(const std::vector<round_result>& rounds, std::size_t connections) {
  std::printf("\nwebhooks (%zu connections split over the processes, 1 %% forged; CPU per request)\n", connections);
  std::printf("  P | stored/s posted/s  p99 ms | CPU us: workers   PG loader  total | host idle | conns: workers all |"
              " backlog drained\n");
  for (const round_result& round : rounds) {
    const phase_result& w = round.webhooks;
    const long n = w.divisor();
    const double total = bench::us_per(w.workers_cpu_s + w.database_cpu_s + w.loader_cpu_s, n);
    std::printf("  %zu | %8.0f %8.0f %7.1f |        %7.0f %5.0f %6.0f %6.0f | %7.1f %% | %13ld %3ld | %.1f s%s\n",
                round.processes, w.per_s(), static_cast<double>(w.posted) / w.seconds, w.p99_ms,
                bench::us_per(w.workers_cpu_s, n), bench::us_per(w.database_cpu_s, n), bench::us_per(w.loader_cpu_s, n),
                total, w.host.idle_pct, w.worker_connections_peak, w.connections_peak, w.drain_s,
                w.consistent ? "" : (" MISMATCH: " + w.problem).c_str());
  }
}

void print_syncs(const std::vector<round_result>& rounds, const options& o) {
  std::printf("\nsyncs (%zu items x %zu transactions over %zu tenants; CPU per transaction)\n", o.items,
              o.transactions, o.tenants);
  std::printf("  P | transactions/s  seconds | CPU us: workers   PG  sim  total | host idle | conns: workers all\n");
  std::printf("    (total includes this process, which enqueues and polls)\n");
  for (const round_result& round : rounds) {
    const phase_result& s = round.syncs;
    const long n = s.divisor();
    const double total = bench::us_per(s.workers_cpu_s + s.database_cpu_s + s.simulator_cpu_s + s.loader_cpu_s, n);
    std::printf("  %zu | %14.0f %8.2f |        %7.1f %4.1f %4.1f %6.1f | %7.1f %% | %13ld %3ld%s\n", round.processes,
                s.per_s(), s.seconds, bench::us_per(s.workers_cpu_s, n), bench::us_per(s.database_cpu_s, n),
                bench::us_per(s.simulator_cpu_s, n), total, s.host.idle_pct, s.worker_connections_peak,
                s.connections_peak, s.consistent ? "" : (" MISMATCH: " + s.problem).c_str());
  }
}

std::string phase_json(const phase_result& p, const char* rate_name) {
  char text[640];
  const long n = p.divisor();
  std::snprintf(text, sizeof text,
                "{\"%s\":%.0f,\"units\":%ld,\"seconds\":%.3f,\"posted_per_s\":%.0f,\"p99_ms\":%.3f,"
                "\"workers_cpu_us\":%.1f,\"database_cpu_us\":%.1f,\"loader_cpu_us\":%.1f,\"simulator_cpu_us\":%.1f,"
                "\"host_idle_pct\":%.1f,\"host_steal_pct\":%.1f,\"worker_connections_peak\":%ld,"
                "\"connections_peak\":%ld,\"consistent\":%s}",
                rate_name, p.per_s(), p.units, p.seconds, p.seconds > 0 ? static_cast<double>(p.posted) / p.seconds : 0,
                p.p99_ms, bench::us_per(p.workers_cpu_s, n), bench::us_per(p.database_cpu_s, n),
                bench::us_per(p.loader_cpu_s, n), bench::us_per(p.simulator_cpu_s, n), p.host.idle_pct,
                p.host.steal_pct, p.worker_connections_peak, p.connections_peak, p.consistent ? "true" : "false");
  return text;
}

std::string rounds_json(const std::vector<round_result>& rounds, long max_connections, bool consistent) {
  std::string json = "{\"bench\":\"scale\",\"max_connections\":" + std::to_string(max_connections) + ",\"rounds\":[";
  for (std::size_t i = 0; i < rounds.size(); ++i) {
    json += (i == 0 ? "" : ",") + std::string("{\"processes\":") + std::to_string(rounds[i].processes) +
            ",\"webhooks\":" + phase_json(rounds[i].webhooks, "stored_per_s") +
            ",\"syncs\":" + phase_json(rounds[i].syncs, "transactions_per_s") + "}";
  }
  return json + "],\"consistent\":" + (consistent ? "true" : "false") + "}";
}

long max_connections_of(const std::string& cluster_url) {
  pqxx::connection admin(cluster_url);
  pqxx::nontransaction tx(admin);
  return tx.exec1("SHOW max_connections")[0].as<long>();
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_options(argc, argv);
  if (sodium_init() < 0) return 1;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::string cluster_url = bench::cluster_url("scale_bench");
  char directory_template[] = "/tmp/bw_scale_bench_XXXXXX";
  const std::filesystem::path directory = ::mkdtemp(directory_template);
  std::vector<round_result> rounds;
  bool consistent = false;
  long max_connections = 0;
  try {
    const std::string secret = "whsec_" + bench::random_hex(24);
    bench::write_private_file(directory / "root-key", bench::random_hex(32) + "\n");
    bench::write_private_file(directory / "webhook-secret", secret + "\n");
    max_connections = max_connections_of(cluster_url);
    // Two threads: with four workers syncing at once one simulator thread would be the limit.
    test::child_process sim(PLAID_SIM_BINARY,
                            {"--port", "0", "--threads", "2", "--items", std::to_string(o.items), "--transactions",
                             std::to_string(o.transactions)},
                            {});
    const std::string sim_url = bench::trimmed(test::base_url_from(sim));
    const std::string sim_pid = std::to_string(sim.pid());
    std::printf("scale_bench: %zu s of webhooks per round, then %zu x %zu transactions; cluster max_connections %ld;"
                " load average %s\n",
                o.seconds, o.items, o.transactions, max_connections, bench::load_average().c_str());
    for (const std::size_t processes : o.processes) {
      std::printf("== %zu worker process%s\n", processes, processes == 1 ? "" : "es");
      std::fflush(stdout);
      rounds.push_back(run_round(o, processes, cluster_url, directory, sim_url, sim_pid, secret));
    }
    sim.signal(SIGTERM);
    sim.wait(std::chrono::seconds(10));
    consistent = !rounds.empty();
    for (const round_result& round : rounds) consistent = consistent && round.webhooks.consistent && round.syncs.consistent;
    print_webhooks(rounds, o.connections);
    print_syncs(rounds, o);
    std::printf("load average after: %s\n", bench::load_average().c_str());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "scale_bench: %s\n", error.what());
  }
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);
  std::printf("%s\n", rounds_json(rounds, max_connections, consistent).c_str());
  return consistent ? 0 : 1;
}
