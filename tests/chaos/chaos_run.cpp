// chaos_run: bankworker under a mixed load while its workers are killed, PostgreSQL restarts and
// the providers fail, then checked against the simulators' ground truth (tests/chaos/README.md).
//
//   chaos_run [--seed N] [--seconds S] [--workers W] [--tenants T] [--keep] [--failover]
//
// With --failover (make failover, issue #18) PostgreSQL is a pg_auto_failover formation
// (scripts/pg-ha) instead, and the run performs a planned switchover and then kills the
// primary's host, instead of killing workers and restarting PostgreSQL; it measures the write
// gap of each failover and checks that writes resume within 10 s of the new primary.
//
// Prints the seed first and a summary last; exits 0 when every invariant holds, 1 when one does
// not, 2 on bad usage, 3 when the run itself could not be set up. The same seed gives the same
// schedule (its fingerprint is printed).

#include <curl/curl.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>
#include <simdjson.h>

#include "tests/chaos/cluster.hpp"
#include "tests/chaos/failover.hpp"
#include "tests/chaos/watchdog.hpp"
#include "tests/chaos/invariants.hpp"
#include "tests/chaos/schedule.hpp"
#include "tests/chaos/storm.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/logins.hpp"
#include "tests/support/process.hpp"

namespace bankworker::chaos {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace limits {
inline constexpr std::size_t workers_max = 8;
inline constexpr std::size_t tenants_max = 100;
inline constexpr long seconds_max = 24 * 3600;
// A command that failed while the database was away is tried again this often, at most this many times.
inline constexpr milliseconds deferred_retry{1'000};
inline constexpr int deferred_attempts_max = 60;
// Waits of the settle phase.
inline constexpr seconds workers_ready_timeout{90};
inline constexpr seconds storm_drain_timeout{180};
inline constexpr seconds quiescence_timeout{300};
// The workers' drain deadline (BANKWORKER_DRAIN_TIMEOUT) and how long past it we wait for exit.
inline constexpr seconds drain_timeout{10};
inline constexpr seconds drain_grace{20};
// A short lease so that a killed worker's jobs are rescued within seconds, as the issue wants
// them rescued during the run, not after it.
inline constexpr int job_lease_s = 5;
// Revocations stop once this share of the links made has been revoked.
inline constexpr std::size_t links_per_revocation_min = 4;
// Items each tenant links before the chaos starts, and transactions each new item comes with.
inline constexpr std::size_t initial_links_per_tenant = 2;
inline constexpr int transactions_per_item = 150;
// Link's own call to Plaid, tried again this often when an injected failure hits it; few, so
// that the schedule (and the restarts it owes) is not held up through a slow period.
inline constexpr int link_attempts_max = 3;
// A refusal's reason in the summary, cut to this.
inline constexpr std::size_t reason_chars_max = 200;
// A worker that exited by itself is started again after this (systemd's RestartSec), and one
// that exits 1 this soon after PostgreSQL came back still counts as refused at start-up.
inline constexpr milliseconds supervisor_restart_pause{1'000};
inline constexpr seconds postgres_settle{5};
inline constexpr seconds postgres_refusal_reaped_within{60};
// --failover: leases long enough to outlast a failover (they are renewed once it is over; a
// rescue would count an attempt), the probe's interval, when the two failovers happen (shares of
// the chaos phase) and how soon after the new primary takes writes every worker must write again.
inline constexpr int failover_job_lease_s = 60;
inline constexpr milliseconds probe_interval{200};
inline constexpr double switchover_at = 0.25, kill_at = 0.6;
inline constexpr double resume_within_s = 10.0;
inline constexpr seconds between_failovers{10};
inline constexpr int standby_refusal_timeout_ms = 90'000;
// The whole run's hard deadline beyond --seconds (watchdog.hpp): set-up, the failovers' own waits
// and settling. The failover budget leaves room for one failover that needs every remedy of
// scripts/pg-ha (up to 480 s, cluster.cpp) beside a plain one, and keeps the 60 s ctest (ctest
// TIMEOUT 1200) inside ctest's limit, so that a stuck run fails with its own message; a healthy
// one takes about 150 s in all.
inline constexpr seconds run_overhead_max{900};
inline constexpr seconds failover_run_overhead_max{960};
}  // namespace limits

constexpr const char* plaid_client_id = "bankworker-sim-client";
constexpr const char* plaid_secret = "bankworker-sim-secret";
constexpr const char* stripe_api_key = "sk_test_bankworker_chaos";

struct options {
  std::uint64_t seed = 0;
  long seconds = 75;
  std::size_t workers = 3;
  std::size_t tenants = 6;
  bool keep = false;  // keep the temporary directory (worker logs) even when every invariant holds
  bool failover = false;  // a pg_auto_failover formation and failovers instead of kills and a restart
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "chaos_run: " << why
            << "\nusage: chaos_run [--seed N] [--seconds S] [--workers 2..8] [--tenants 1..100] [--keep] [--failover]\n";
  std::exit(2);
}

options parse_options(int argc, char** argv) {
  options o;
  o.seed = (static_cast<std::uint64_t>(randombytes_random()) << 32) | randombytes_random();
  const auto number = [&](int& i) -> unsigned long long {
    if (i + 1 >= argc) usage(std::string(argv[i]) + " needs a value");
    char* end = nullptr;
    const unsigned long long value = std::strtoull(argv[++i], &end, 10);
    if (end == argv[i] || *end != '\0') usage(std::string("not a number: ") + argv[i]);
    return value;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--seed") o.seed = number(i);
    else if (flag == "--seconds") o.seconds = static_cast<long>(number(i));
    else if (flag == "--workers") o.workers = number(i);
    else if (flag == "--tenants") o.tenants = number(i);
    else if (flag == "--keep") o.keep = true;
    else if (flag == "--failover") o.failover = true;
    else usage("unknown flag " + flag);
  }
  if (o.seconds < 5 || o.seconds > limits::seconds_max) usage("--seconds must be 5.." + std::to_string(limits::seconds_max));
  if (o.workers < 2 || o.workers > limits::workers_max) usage("--workers must be 2..8");
  if (o.tenants < 1 || o.tenants > limits::tenants_max) usage("--tenants must be 1..100");
  return o;
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

double seconds_since(clock::time_point start) {
  return std::chrono::duration<double>(clock::now() - start).count();
}

// The worker processes, one per slot; a slot keeps its port across restarts so the storm and
// the Plaid webhooks always know where to send.
// A worker that stopped writing while the database took writes (write_probe): every thread's stack,
// from gdb, appended to worker-N.stacks beside its log, so a stall is explained after the run.
void record_stacks(pid_t pid, const std::filesystem::path& dir, std::size_t worker) {
  const auto file = dir / ("worker-" + std::to_string(worker) + ".stacks");
  std::ofstream out(file, std::ios::app);
  out << "== worker " << worker << " (pid " << pid << ") wrote nothing for " << write_probe::stall_after.count()
      << " s while the database took writes\n";
  try {
    // Through env, which finds gdb on PATH (run_process does not search it).
    const auto result = test::run_process("/usr/bin/env", {"gdb", "-p", std::to_string(pid), "-batch", "-ex",
                                                           "thread apply all bt"},
                                          {{"PATH", "/usr/local/bin:/usr/bin:/bin"}}, 120'000);
    out << result.out << result.err << "\n";
  } catch (const std::exception& error) {
    out << "gdb could not be run: " << error.what() << "\n";
  }
  std::cout << "  failover: worker " << worker << " stalled; its stacks are in " << file.string() << std::endl;
}

class fleet {
 public:
  fleet(std::size_t workers, std::map<std::string, std::string> env, std::filesystem::path log_dir)
      : env_(std::move(env)), log_dir_(std::move(log_dir)) {
    for (std::size_t i = 0; i < workers; ++i) slots_.push_back({test::free_loopback_port(), test::free_loopback_port(), nullptr, std::nullopt});
  }

  std::size_t size() const { return slots_.size(); }
  std::string url(std::size_t i) const { return "http://127.0.0.1:" + std::to_string(slots_[i].port); }
  std::vector<std::string> urls() const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < slots_.size(); ++i) out.push_back(url(i));
    return out;
  }
  bool up(std::size_t i) const { return slots_[i].process != nullptr; }
  pid_t pid(std::size_t i) const { return slots_[i].process ? slots_[i].process->pid() : -1; }
  const std::filesystem::path& log_dir() const { return log_dir_; }

  void start(std::size_t i) {
    auto env = env_;
    env["BANKWORKER_HTTP_LISTEN"] = "127.0.0.1:" + std::to_string(slots_[i].port);
    env["BANKWORKER_ADMIN_LISTEN"] = "127.0.0.1:" + std::to_string(slots_[i].admin_port);
    const std::string log = (log_dir_ / ("worker-" + std::to_string(i) + ".log")).string();
    // Through sh only to send its output to a log file; exec leaves bankworker as the child.
    slots_[i].process = std::make_unique<test::child_process>(
        "/bin/sh", std::vector<std::string>{"-c", "exec \"$0\" run >>\"$1\" 2>&1", BANKWORKER_BINARY, log}, env);
    slots_[i].restart_at.reset();
  }

  void kill(std::size_t i, milliseconds pause) {
    slots_[i].process->signal(SIGKILL);
    slots_[i].process->wait(seconds(10));
    slots_[i].process.reset();
    slots_[i].restart_at = clock::now() + pause;
  }

  // Restarts the slots whose pause is over; returns how many.
  std::size_t restart_due() {
    std::size_t restarted = 0;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].restart_at && *slots_[i].restart_at <= clock::now()) {
        start(i);
        ++restarted;
      }
    }
    return restarted;
  }

  struct exit_seen {
    std::size_t slot = 0;
    int code = 0;
    std::string last_log_line;
  };
  // Workers that exited on their own since the last call; each is started again after
  // `restart_pause`, as systemd's Restart=on-failure would.
  std::vector<exit_seen> reap_exits(milliseconds restart_pause) {
    std::vector<exit_seen> seen;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].process) continue;
      if (const auto code = slots_[i].process->wait(milliseconds(0))) {
        seen.push_back({i, *code, last_log_line(i)});
        slots_[i].process.reset();
        slots_[i].restart_at = clock::now() + restart_pause;
      }
    }
    return seen;
  }

  std::string last_log_line(std::size_t i) const {
    std::ifstream log(log_dir_ / ("worker-" + std::to_string(i) + ".log"));
    std::string line, last;
    while (std::getline(log, line)) {
      if (!line.empty()) last = line;
    }
    return last.substr(0, limits::reason_chars_max);
  }

  bool all_ready() const {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!up(i) || test::http_get("http://127.0.0.1:" + std::to_string(slots_[i].admin_port) + "/readyz").status != 200) return false;
    }
    return true;
  }

  // SIGTERM to every worker; their exit codes (999: still running after the grace period).
  std::vector<int> drain() {
    for (auto& slot : slots_) {
      if (slot.process) slot.process->signal(SIGTERM);
    }
    std::vector<int> codes;
    for (auto& slot : slots_) {
      if (!slot.process) {
        codes.push_back(999);
        continue;
      }
      const auto code = slot.process->wait(limits::drain_timeout + limits::drain_grace);
      codes.push_back(code.value_or(999));
      slot.process.reset();
    }
    return codes;
  }

 private:
  struct slot {
    std::uint16_t port = 0;
    std::uint16_t admin_port = 0;  // /readyz and /metrics
    std::unique_ptr<test::child_process> process;
    std::optional<clock::time_point> restart_at;
  };
  std::map<std::string, std::string> env_;
  std::filesystem::path log_dir_;
  std::vector<slot> slots_;
};

struct connection_ref {
  std::string tenant, connection, item;
};

struct sim_item {
  std::string access_token, item_id;
  std::vector<std::string> accounts;
};

// A CLI command that failed while the database was away, to be tried again.
struct deferred_command {
  std::vector<std::string> args;
  clock::time_point at;
  int attempts = 0;
  action_kind kind = action_kind::sync;
  std::string subject;  // revoke: the connection; link: unused
};

class chaos_run {
 public:
  explicit chaos_run(options o) : options_(o) {}
  int run();

 private:
  // Set-up.
  void set_up();
  std::string cli(const std::vector<std::string>& args);  // throws with the reason on failure
  test::process_result try_cli(const std::vector<std::string>& args);
  void link(std::size_t tenant);

  // The chaos phase.
  void execute(const action& a);
  void run_command(deferred_command command);
  void run_deferred();
  std::vector<connection_ref> active_connections();
  const std::vector<sim_item>& items();
  std::string plaid_post(const std::string& path, const std::string& body);
  void mutate(const action& a);
  void plaid_fault(const action& a);
  void plaid_slow(const action& a);
  void stripe_event(const action& a);
  void restart_postgres(milliseconds down);
  void note_exits();
  // --failover.
  void check_standby_refused();
  void run_failovers(clock::time_point chaos_start);
  std::vector<invariant_result> check_failovers();

  // The end.
  bool settle(std::vector<std::string>& notes);
  void print_summary(const std::vector<invariant_result>& results, double chaos_s, double settle_s);

  options options_;
  std::filesystem::path dir_;
  std::unique_ptr<private_cluster> cluster_;
  std::unique_ptr<ha_cluster> ha_;
  std::unique_ptr<write_probe> probe_;
  struct failover_record {
    std::string kind;  // "switchover" or "primary killed"
    clock::time_point started{}, ended{};
    std::string line, error;  // scripts/pg-ha's answer, or why it failed
  };
  std::vector<failover_record> failovers_;  // written by failover_thread_ only until it is joined
  std::thread failover_thread_;
  std::string standby_refusal_;  // what `run` did with a URL naming only the standby
  std::unique_ptr<test::child_process> plaid_sim_, stripe_sim_;
  std::map<std::string, std::string> cli_env_, worker_env_;
  std::unique_ptr<fleet> fleet_;
  std::unique_ptr<webhook_storm> storm_;
  std::string platform_secret_;
  run_record record_;

  std::vector<sim_item> items_;
  clock::time_point items_read_at_{};
  std::map<std::string, std::vector<std::string>> pending_ids_;  // by access token: pending ones we added
  std::map<std::string, std::vector<std::string>> posted_ids_;   // by access token: posted ones we added
  std::vector<deferred_command> deferred_;
  simdjson::dom::parser parser_;

  std::thread postgres_thread_;
  std::atomic<bool> postgres_down_{false};
  std::atomic<long> postgres_down_ms_{0};
  std::atomic<clock::time_point> postgres_back_at_{clock::time_point{}};
  std::string postgres_error_;

  // Counters for the summary.
  std::map<std::string, std::uint64_t> done_;      // actions carried out, by kind name
  std::map<std::string, std::uint64_t> skipped_;   // actions with nothing to act on, by kind name
  std::map<std::string, std::uint64_t> refused_;   // commands or control calls refused, by kind name
  std::vector<std::string> refusal_examples_;
  std::uint64_t kills_ = 0, restarts_ = 0, postgres_restarts_ = 0, deferred_total_ = 0;
  std::uint64_t plaid_changes_ = 0, stripe_events_ = 0, unexpected_exits_ = 0, startup_refusals_ = 0;
  storm_counts storm_counts_;
  std::vector<std::string> notes_;
  std::unique_ptr<run_watchdog> watchdog_;
};

test::process_result chaos_run::try_cli(const std::vector<std::string>& args) {
  return test::run_process(BANKWORKER_BINARY, args, cli_env_, 60'000);
}

std::string chaos_run::cli(const std::vector<std::string>& args) {
  const auto result = try_cli(args);
  if (result.exit_code != 0) {
    std::string line;
    for (const auto& a : args) line += " " + a;
    throw std::runtime_error("bankworker" + line + " exited " + std::to_string(result.exit_code) + ": " + result.err);
  }
  return result.out;
}

std::string chaos_run::plaid_post(const std::string& path, const std::string& body) {
  const auto answer = test::http_post(record_.plaid_url + path, body);
  if (answer.status != 200) throw std::runtime_error(path + " answered " + std::to_string(answer.status) + ": " + answer.body);
  return answer.body;
}

void chaos_run::set_up() {
  std::string pattern = (std::filesystem::temp_directory_path() / "bankworker-chaos-run-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;

  if (options_.failover) {
    ha_ = std::make_unique<ha_cluster>(BANKWORKER_SOURCE_DIR);
    record_.admin_url = ha_->url();
  } else {
    cluster_ = std::make_unique<private_cluster>(BANKWORKER_SOURCE_DIR);
    record_.admin_url = cluster_->url();
  }

  // Secrets in files readable by their owner only: the root key, the Connect platform's
  // webhook secret and the platform's Stripe API key.
  const auto write_secret = [&](const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    ::chmod(path.c_str(), 0600);
    return path.string();
  };
  unsigned char key[32];
  randombytes_buf(key, sizeof key);
  char hex[65];
  sodium_bin2hex(hex, sizeof hex, key, sizeof key);
  const std::string root_key_file = write_secret("root-key", hex);
  randombytes_buf(key, sizeof key);
  sodium_bin2hex(hex, sizeof hex, key, sizeof key);
  platform_secret_ = std::string("whsec_chaos") + hex;
  const std::string platform_secret_file = write_secret("platform-secret", platform_secret_);
  const std::string api_key_file = write_secret("stripe-api-key", stripe_api_key);

  cli_env_ = {{"BANKWORKER_DATABASE_URL", record_.admin_url}, {"BANKWORKER_ROOT_KEY_FILE", root_key_file}};
  cli({"migrate"});
  // Everything after the schema runs as a runtime login, as a deployment must (README: roles).
  cli_env_["BANKWORKER_MIGRATE_DATABASE_URL"] = record_.admin_url;
  cli_env_["BANKWORKER_DATABASE_URL"] =
      test::create_login(record_.admin_url, record_.admin_url, "bankworker_chaos_runtime", "bankworker_worker");
  record_.cli_env = cli_env_;

  plaid_sim_ = std::make_unique<test::child_process>(
      PLAID_SIM_BINARY,
      std::vector<std::string>{"--port", "0", "--seed", std::to_string(options_.seed % 1'000'000'007ULL + 1),
                               "--transactions", std::to_string(limits::transactions_per_item), "--threads", "2"},
      std::map<std::string, std::string>{});
  record_.plaid_url = test::base_url_from(*plaid_sim_);
  stripe_sim_ = std::make_unique<test::child_process>(
      STRIPE_SIM_BINARY,
      std::vector<std::string>{"--port", "0", "--seed", std::to_string(options_.seed % 1'000'000'007ULL + 1), "--api-key",
                               stripe_api_key},
      std::map<std::string, std::string>{});
  record_.stripe_url = test::base_url_from(*stripe_sim_);
  record_.stripe_api_key = stripe_api_key;

  for (std::size_t i = 0; i < options_.tenants; ++i) {
    record_.tenants.push_back(trimmed(cli({"tenant", "create", "--name", "chaos tenant " + std::to_string(i)})));
    char account[32];
    std::snprintf(account, sizeof account, "acct_chaos%03zu", i);
    record_.accounts.push_back(account);
    cli({"stripe", "connect", "--tenant", record_.tenants.back(), "--account", account});
  }

  worker_env_ = cli_env_;
  worker_env_.insert({{"BANKWORKER_PLAID_BASE_URL", record_.plaid_url},
                      {"BANKWORKER_PLAID_CLIENT_ID", plaid_client_id},
                      {"BANKWORKER_PLAID_SECRET", plaid_secret},
                      {"BANKWORKER_STRIPE_API_BASE_URL", record_.stripe_url},
                      {"BANKWORKER_STRIPE_PLATFORM_SECRET_FILE", platform_secret_file},
                      {"BANKWORKER_STRIPE_API_KEY_FILE", api_key_file},
                      {"BANKWORKER_JOB_LEASE", std::to_string(options_.failover ? limits::failover_job_lease_s
                                                                                : limits::job_lease_s)},
                      {"BANKWORKER_DRAIN_TIMEOUT", std::to_string(limits::drain_timeout.count())},
                      {"BANKWORKER_LOG_LEVEL", "warn"}});
  if (options_.failover) check_standby_refused();
  fleet_ = std::make_unique<fleet>(options_.workers, worker_env_, dir_);
  for (std::size_t i = 0; i < fleet_->size(); ++i) fleet_->start(i);
  const auto deadline = clock::now() + limits::workers_ready_timeout;
  while (!fleet_->all_ready()) {
    if (clock::now() > deadline) throw std::runtime_error("the workers did not become ready");
    std::this_thread::sleep_for(milliseconds(100));
  }
  storm_ = std::make_unique<webhook_storm>(fleet_->urls(), platform_secret_, options_.seed ^ 0x5eedULL, 3);
  if (options_.failover) {
    // Failover runs restart no worker, so each keeps the pid it has now.
    std::vector<pid_t> pids;
    for (std::size_t i = 0; i < fleet_->size(); ++i) pids.push_back(fleet_->pid(i));
    probe_ = std::make_unique<write_probe>(
        record_.admin_url, fleet_->urls(), platform_secret_, record_.accounts[0], limits::probe_interval,
        [this](const std::string& id, const std::string& body) { storm_->add(id, body, 1); },
        [pids, dir = fleet_->log_dir()](std::size_t worker) { record_stacks(pids.at(worker), dir, worker); });
  }
  for (std::size_t t = 0; t < options_.tenants; ++t) {
    for (std::size_t i = 0; i < limits::initial_links_per_tenant; ++i) link(t);
  }
}

// A user completes Link (retrying while Plaid answers with an injected failure) and the app
// hands the public token to bankworker.
void chaos_run::link(std::size_t tenant) {
  const std::string request = std::string("{\"client_id\":\"") + plaid_client_id + "\",\"secret\":\"" + plaid_secret +
                              "\",\"institution_id\":\"ins_109508\",\"initial_products\":[\"transactions\"]}";
  std::string created;
  for (int attempt = 1;; ++attempt) {
    const auto answer = test::http_post(record_.plaid_url + "/sandbox/public_token/create", request);
    if (answer.status == 200) {
      created = answer.body;
      break;
    }
    if (attempt == limits::link_attempts_max) {
      throw std::runtime_error("/sandbox/public_token/create answered " + std::to_string(answer.status) + " " +
                               std::to_string(attempt) + " times");
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  const std::string token(parser_.parse(created)["public_token"].get_string().value());
  run_command({{"plaid", "link", "--tenant", record_.tenants[tenant], "--public-token", token}, clock::now(), 0,
               action_kind::link, {}});
  items_read_at_ = {};  // a new item exists
}

// Runs a command now; one refused while PostgreSQL is away (or by a connection it cut) is tried
// again later, as a client of the service would.
void chaos_run::run_command(deferred_command command) {
  const std::string kind(name_of(command.kind));
  const auto result = try_cli(command.args);
  if (result.exit_code == 0) {
    if (command.kind == action_kind::link) ++record_.links_requested;
    if (command.kind == action_kind::revoke) record_.revocations_requested.push_back(command.subject);
    ++done_[kind];
    return;
  }
  bool database_trouble = postgres_down_;
  for (const char* phrase : {"could not connect", "connection to server", "server closed the connection",
                             "terminating connection", "Connection refused", "the database system is",
                             "no connection to the server", "read-only transaction", "names no primary"}) {
    database_trouble = database_trouble || result.err.find(phrase) != std::string::npos;
  }
  if (database_trouble && command.attempts < limits::deferred_attempts_max) {
    ++command.attempts;
    ++deferred_total_;
    command.at = clock::now() + limits::deferred_retry;
    deferred_.push_back(std::move(command));
    return;
  }
  ++refused_[kind];
  if (refusal_examples_.size() < 8) refusal_examples_.push_back(kind + ": " + trimmed(result.err).substr(0, limits::reason_chars_max));
}

void chaos_run::run_deferred() {
  std::vector<deferred_command> due;
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (it->at <= clock::now()) {
      due.push_back(std::move(*it));
      it = deferred_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& command : due) run_command(std::move(command));
}

std::vector<connection_ref> chaos_run::active_connections() {
  pqxx::connection db(record_.admin_url);
  pqxx::work tx(db);
  std::vector<connection_ref> out;
  for (const auto& r : tx.exec("SELECT tenant_id::text, connection_id::text, coalesce(item_id, '')"
                               " FROM bankworker.connections WHERE status = 'active' ORDER BY created_at")) {
    out.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<std::string>()});
  }
  return out;
}

const std::vector<sim_item>& chaos_run::items() {
  if (clock::now() - items_read_at_ < seconds(2)) return items_;
  items_.clear();
  const std::string body = plaid_post("/sim/items", "{}");
  for (simdjson::dom::element item : parser_.parse(body)["items"].get_array()) {
    if (item["removed"].get_bool().value()) continue;  // revoked: Plaid refuses changes to it
    sim_item it{std::string(item["access_token"].get_string().value()), std::string(item["item_id"].get_string().value()), {}};
    for (simdjson::dom::element account : item["accounts"].get_array()) {
      it.accounts.emplace_back(account["account_id"].get_string().value());
    }
    items_.push_back(std::move(it));
  }
  items_read_at_ = clock::now();
  return items_;
}

// A change at the bank on a random item: what the next sync must bring in.
void chaos_run::mutate(const action& a) {
  const auto& all = items();
  if (all.empty()) {
    ++skipped_["bank change"];
    return;
  }
  const std::uint64_t variant = a.detail % 100;
  std::size_t chosen = a.pick % all.size();
  if (variant >= 25 && variant < 45) {
    // Posting needs a pending transaction: the next item (in order) that has one.
    for (std::size_t step = 0; step < all.size(); ++step) {
      const std::size_t at = (chosen + step) % all.size();
      if (!pending_ids_[all[at].access_token].empty()) {
        chosen = at;
        break;
      }
    }
  }
  const sim_item& item = all[chosen];
  const std::string token = json_string(item.access_token);
  const std::int64_t amount = static_cast<std::int64_t>((a.detail >> 8) % 500'000) - 100'000;
  const std::string amount_text = std::to_string(amount == 0 ? 1 : amount);
  const std::string account =
      item.accounts.empty() ? "" : ",\"account_id\":" + json_string(item.accounts[(a.detail >> 32) % item.accounts.size()]);
  auto& pending = pending_ids_[item.access_token];
  auto& posted = posted_ids_[item.access_token];
  const auto take = [&](std::vector<std::string>& ids) {
    const std::size_t at = (a.detail >> 40) % ids.size();
    std::string id = ids[at];
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(at));
    return id;
  };
  std::string body;
  try {
    if (variant < 25) {
      body = plaid_post("/sim/transactions/add", "{\"access_token\":" + token + ",\"pending\":true,\"amount_minor\":" +
                                                     amount_text + account + "}");
      pending.emplace_back(parser_.parse(body)["transaction"]["transaction_id"].get_string().value());
    } else if (variant < 45 && !pending.empty()) {
      const std::string added_first = (a.detail >> 20) % 2 == 0 ? "" : ",\"added_first\":true";
      plaid_post("/sim/transactions/post", "{\"access_token\":" + token + ",\"transaction_id\":" + json_string(take(pending)) +
                                               added_first + "}");
    } else if (variant < 60 || (variant < 78 && posted.empty())) {
      body = plaid_post("/sim/transactions/add", "{\"access_token\":" + token + ",\"pending\":false,\"amount_minor\":" +
                                                     amount_text + account + "}");
      posted.emplace_back(parser_.parse(body)["transaction"]["transaction_id"].get_string().value());
    } else if (variant < 70) {
      plaid_post("/sim/transactions/modify", "{\"access_token\":" + token + ",\"transaction_id\":" +
                                                 json_string(posted[(a.detail >> 40) % posted.size()]) +
                                                 ",\"amount_minor\":" + amount_text + "}");
    } else if (variant < 78) {
      plaid_post("/sim/transactions/remove", "{\"access_token\":" + token + ",\"transaction_id\":" + json_string(take(posted)) + "}");
    } else {
      // A batch; one in four is large enough to take several pages of 500.
      const std::uint64_t count = variant < 93 ? 10 + (a.detail >> 12) % 150 : 400 + (a.detail >> 12) % 900;
      plaid_post("/sim/transactions/generate", "{\"access_token\":" + token + ",\"count\":" + std::to_string(count) + "}");
    }
    ++plaid_changes_;
    ++done_["bank change"];
  } catch (const std::exception&) {
    // A removed item refuses changes; that is the simulator being right.
    ++refused_["bank change"];
  }
}

void chaos_run::plaid_fault(const action& a) {
  const std::string times = std::to_string(1 + (a.detail >> 8) % 4);
  static const char* const faults[] = {
      R"({"endpoint":"/transactions/sync","error_code":"INTERNAL_SERVER_ERROR","times":)",
      R"({"endpoint":"/transactions/sync","error_code":"RATE_LIMIT_EXCEEDED","times":)",
      R"({"error_code":"PLANNED_MAINTENANCE","times":)",
      R"({"endpoint":"/transactions/sync","error_code":"INSTITUTION_DOWN","times":)",
      R"({"endpoint":"/transactions/sync","page":2,"error_code":"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION","times":)",
      R"({"endpoint":"/transactions/sync","body":"truncated","times":)",
      R"({"endpoint":"/item/remove","error_code":"INTERNAL_SERVER_ERROR","times":)",
      R"({"endpoint":"/item/public_token/exchange","error_code":"INTERNAL_SERVER_ERROR","times":)",
      R"({"endpoint":"/transactions/sync","body":"malformed","times":)",
      R"({"endpoint":"/transactions/sync","delay_ms":4000,"times":)",
  };
  const std::string body = std::string(faults[a.detail % std::size(faults)]) + times + "}";
  if (test::http_post(record_.plaid_url + "/sim/faults", body).status == 200) ++done_["plaid fault"];
  else ++refused_["plaid fault"];
}

// Plaid slow (every sync call delayed) or failing (every call a 5xx) for the next few dozen calls.
void chaos_run::plaid_slow(const action& a) {
  const std::string times = std::to_string(20 + (a.detail >> 8) % 60);
  std::string body;
  switch (a.detail % 3) {
    case 0: body = R"({"endpoint":"/transactions/sync","delay_ms":)" + std::to_string(300 + (a.detail >> 16) % 2'500) + R"(,"times":)" + times + "}"; break;
    case 1: body = R"({"error_code":"INTERNAL_SERVER_ERROR","times":)" + times + "}"; break;
    default: body = R"({"delay_ms":)" + std::to_string(500 + (a.detail >> 16) % 1'500) + R"(,"times":)" + times + "}"; break;
  }
  if (test::http_post(record_.plaid_url + "/sim/faults", body).status == 200) ++done_["plaid slow/failing period"];
  else ++refused_["plaid slow/failing period"];
}

// One money scenario at Stripe for a tenant's Connect account; its events join the storm.
void chaos_run::stripe_event(const action& a) {
  const std::size_t tenant = a.pick % record_.tenants.size();
  static const char* const currencies[] = {"usd", "eur", "jpy"};
  const std::string currency = currencies[(a.detail >> 8) % 3];
  const std::int64_t amount = 100 + static_cast<std::int64_t>((a.detail >> 16) % 200'000);
  const std::uint64_t roll = a.detail % 100;
  std::vector<std::pair<std::string, std::int64_t>> scenarios;  // kind, amount: run in order
  if (roll < 40) scenarios = {{"payment", amount}};
  else if (roll < 60) scenarios = {{"payment", amount}, {"refund", amount / 2 + 1}};
  else if (roll < 75) scenarios = {{"payout", amount}};
  else if (roll < 85) scenarios = {{"payout_failed", amount}};
  else scenarios = {{"payment", amount}, {"dispute", amount}};
  const unsigned copies_roll = static_cast<unsigned>((a.detail >> 40) % 10);
  const unsigned copies = copies_roll < 6 ? 1 : copies_roll < 9 ? 2 : 3;
  for (const auto& [kind, money] : scenarios) {
    // Trigger without delivery (the storm delivers), one scenario at a time so that a refund or
    // dispute names the charge made just before it.
    const auto triggered = test::http_post(record_.stripe_url + "/sim/trigger",
                                           "{\"kind\":\"" + kind + "\",\"amount\":" + std::to_string(money) +
                                               ",\"currency\":\"" + currency + "\",\"account\":\"" +
                                               record_.accounts[tenant] + "\",\"deliver_to\":\"\"}");
    if (triggered.status != 200) throw std::runtime_error("/sim/trigger answered " + std::to_string(triggered.status));
    std::vector<std::string> ids;
    for (simdjson::dom::element id : parser_.parse(triggered.body)["events"].get_array()) ids.emplace_back(id.get_string().value());
    // The events as Stripe lists them (newest first): the exact JSON to deliver.
    const auto listed = test::http_get(record_.stripe_url + "/v1/events?limit=" + std::to_string(ids.size()),
                                       {"Authorization: Bearer " + std::string(stripe_api_key),
                                        "Stripe-Account: " + record_.accounts[tenant]});
    if (listed.status != 200) throw std::runtime_error("/v1/events answered " + std::to_string(listed.status));
    for (simdjson::dom::element event : parser_.parse(listed.body)["data"].get_array()) {
      const std::string id(event["id"].get_string().value());
      std::string body = simdjson::minify(event);
      record_.events[id] = {tenant, body};
      storm_->add(id, std::move(body), copies);
      ++stripe_events_;
    }
  }
  ++done_["stripe event"];
}

// A worker that exits by itself: at start-up while PostgreSQL is away it must (exit 1, the
// database is unreachable; its supervisor starts it again), at any other time it must not.
void chaos_run::note_exits() {
  for (const auto& exit : fleet_->reap_exits(limits::supervisor_restart_pause)) {
    const bool postgres_away = postgres_down_ || clock::now() - postgres_back_at_.load() < limits::postgres_settle;
    // An exit is reaped when this loop next looks, which can be long after it happened (a command
    // retried after the outage holds the loop): a start-up the database refused, reaped soon
    // after the restart, is still the outage's.
    const bool refused_in_outage = exit.last_log_line.find("cannot connect to the database") != std::string::npos &&
                                   postgres_restarts_ > 0 &&
                                   clock::now() - postgres_back_at_.load() < limits::postgres_refusal_reaped_within;
    if (exit.code == 1 && (postgres_away || refused_in_outage)) {
      ++startup_refusals_;
    } else {
      ++unexpected_exits_;
      record_.unexpected_exits.push_back("worker " + std::to_string(exit.slot) + " exited " + std::to_string(exit.code) +
                                         ": " + exit.last_log_line);
    }
  }
}

void chaos_run::restart_postgres(milliseconds down) {
  postgres_down_ = true;
  const auto stopped_at = clock::now();
  try {
    cluster_->stop();
    std::this_thread::sleep_for(down);
    cluster_->start();
  } catch (const std::exception& error) {
    postgres_error_ = error.what();
  }
  postgres_down_ms_ = std::chrono::duration_cast<milliseconds>(clock::now() - stopped_at).count();
  postgres_back_at_ = clock::now();
  postgres_down_ = false;
}

void chaos_run::execute(const action& a) {
  const std::string kind(name_of(a.kind));
  switch (a.kind) {
    case action_kind::link:
      link(a.pick % record_.tenants.size());
      return;
    case action_kind::mutate:
      mutate(a);
      return;
    case action_kind::sync:
    case action_kind::revoke: {
      std::vector<connection_ref> active;
      try {
        active = active_connections();
      } catch (const std::exception&) {
        ++skipped_[kind];  // the database is away: nothing to pick from
        return;
      }
      const bool revoke = a.kind == action_kind::revoke;
      if (active.empty() ||
          (revoke && (record_.revocations_requested.size() + 1) * limits::links_per_revocation_min > record_.links_requested)) {
        ++skipped_[kind];
        return;
      }
      const auto& c = active[a.pick % active.size()];
      run_command({{"connections", revoke ? "revoke" : "sync", "--tenant", c.tenant, "--connection", c.connection},
                   clock::now(), 0, a.kind, c.connection});
      return;
    }
    case action_kind::plaid_webhook: {
      const auto& all = items();
      if (all.empty()) {
        ++skipped_[kind];
        return;
      }
      const auto answer = test::http_post(
          record_.plaid_url + "/sim/webhooks/send",
          "{\"access_token\":" + json_string(all[a.pick % all.size()].access_token) +
              ",\"url\":" + json_string(fleet_->url(a.detail % fleet_->size()) + "/webhooks/plaid") + "}");
      if (answer.status == 200) ++done_[kind];
      else ++refused_[kind];
      return;
    }
    case action_kind::plaid_fault:
      plaid_fault(a);
      return;
    case action_kind::plaid_slow:
      plaid_slow(a);
      return;
    case action_kind::stripe_event:
      stripe_event(a);
      return;
    case action_kind::stripe_api_fault: {
      const std::string status = (a.detail % 2 == 0) ? "500" : "429";
      const auto answer = test::http_post(record_.stripe_url + "/sim/fail",
                                          "{\"path\":\"/v1/balance_transactions\",\"status\":" + status + ",\"count\":" +
                                              std::to_string(1 + (a.detail >> 8) % 5) + ",\"retry_after\":\"1\"}");
      if (answer.status == 200) ++done_[kind];
      else ++refused_[kind];
      return;
    }
    case action_kind::rotate_key:
      run_command({{"keys", "rotate", "--tenant", record_.tenants[a.pick % record_.tenants.size()]}, clock::now(), 0, a.kind, {}});
      return;
    case action_kind::rewrap:
      run_command({{"keys", "rewrap", "--tenant", record_.tenants[a.pick % record_.tenants.size()]}, clock::now(), 0, a.kind, {}});
      return;
    case action_kind::kill_worker: {
      const std::size_t slot = a.pick % fleet_->size();
      if (!fleet_->up(slot)) {
        ++skipped_[kind];
        return;
      }
      fleet_->kill(slot, a.pause);
      ++kills_;
      ++done_[kind];
      return;
    }
    case action_kind::restart_postgres:
      if (postgres_thread_.joinable()) {
        ++skipped_[kind];
        return;
      }
      ++postgres_restarts_;
      ++done_[kind];
      postgres_thread_ = std::thread([this, pause = a.pause] { restart_postgres(pause); });
      return;
  }
}

// A worker given a URL that names only the standby must refuse to start with exit 78 and say
// why, rather than spin (issue #18). It waits startup_primary_wait (20 s) first, as a failover
// in progress would deserve.
void chaos_run::check_standby_refused() {
  auto env = worker_env_;
  env["BANKWORKER_DATABASE_URL"] = ha_->standby_only(worker_env_.at("BANKWORKER_DATABASE_URL"));
  env["BANKWORKER_HTTP_LISTEN"] = "127.0.0.1:" + std::to_string(test::free_loopback_port());
  env["BANKWORKER_ADMIN_LISTEN"] = "127.0.0.1:" + std::to_string(test::free_loopback_port());
  const auto started = clock::now();
  const auto result = test::run_process(BANKWORKER_BINARY, {"run"}, env, limits::standby_refusal_timeout_ms);
  const std::string said = trimmed(result.err).substr(0, limits::reason_chars_max);
  if (result.exit_code != 78 || result.err.find("names no primary") == std::string::npos) {
    standby_refusal_ = "exit " + std::to_string(result.exit_code) + ": " + said;
  }
  std::cout << "standby-only URL: exit " << result.exit_code << " after " << static_cast<long>(seconds_since(started))
            << " s: " << said << std::endl;
}

// A planned switchover a quarter into the chaos phase, then the primary's host killed (its
// pg_autoctl and postmaster get SIGKILL) after 60 % of it; each waits until the formation is
// primary + secondary again.
void chaos_run::run_failovers(clock::time_point chaos_start) {
  const auto phase = seconds(options_.seconds);
  clock::time_point earliest = chaos_start;
  for (const auto& [share, kill] : {std::pair{limits::switchover_at, false}, std::pair{limits::kill_at, true}}) {
    // Steady writes between the two, so that each gap is one failover's alone.
    std::this_thread::sleep_until(std::max(earliest, chaos_start + std::chrono::duration_cast<milliseconds>(phase * share)));
    failover_record record{kill ? "primary killed" : "switchover", clock::now(), {}, {}, {}};
    std::cout << "  failover: " << record.kind << " at " << static_cast<long>(seconds_since(chaos_start)) << " s" << std::endl;
    try {
      record.line = ha_->failover(kill);
    } catch (const std::exception& error) {
      record.error = error.what();
    }
    record.ended = clock::now();
    std::cout << "  failover: " << record.kind << " " << (record.error.empty() ? record.line : "FAILED " + record.error) << std::endl;
    earliest = record.ended + limits::between_failovers;
    failovers_.push_back(std::move(record));
  }
}

// Per failover: the database's write gap through the multi-host URL, each worker's own, and how
// soon after the new primary took its first write every worker wrote again (at most
// resume_within_s). Then: no job's recorded error is a failover symptom, since those must give the
// job back uncounted rather than count as its failure.
std::vector<invariant_result> chaos_run::check_failovers() {
  std::vector<invariant_result> results;
  std::ostringstream detail;
  bool passed = failovers_.size() == 2;
  double worst = 0;
  const auto database = probe_->database_writes();
  for (const auto& f : failovers_) {
    detail << "\n    " << f.kind << " (" << (f.error.empty() ? f.line : "failed: " + f.error) << "): ";
    const auto gap = longest_gap(database, f.started, f.ended + seconds(5));
    if (!f.error.empty() || !gap) {
      detail << "no write after it";
      passed = false;
      continue;
    }
    worst = std::max(worst, gap->seconds());
    const auto before = probe_->database_port_at(gap->last_before), after = probe_->database_port_at(gap->first_after);
    detail << "database write gap " << gap->seconds() << " s (port " << (before ? std::to_string(*before) : "?") << " -> "
           << (after ? std::to_string(*after) : "?") << "); workers:";
    for (std::size_t w = 0; w < fleet_->size(); ++w) {
      const auto writes = probe_->worker_writes(w);
      const auto own = longest_gap(writes, f.started, f.ended + seconds(5));
      const auto resumed = first_write_after(writes, gap->first_after);
      detail << " #" << w << " gap " << (own ? std::to_string(own->seconds()).substr(0, 5) : "?") << " s, wrote "
             << (resumed ? std::to_string(*resumed).substr(0, 5) : "never") << " s after the primary;";
      if (own) worst = std::max(worst, own->seconds());
      if (!resumed || *resumed > limits::resume_within_s) passed = false;
    }
  }
  detail << "\n    worst write gap " << worst << " s; probe commits acknowledged without the standby (not counted): "
         << probe_->unreplicated_commits();
  notes_.push_back("failover write gaps:" + detail.str());
  results.push_back({"every worker writes within 10 s of the new primary, after each failover", passed, detail.str()});
  results.push_back({"a URL naming only the standby is refused at start-up with exit 78", standby_refusal_.empty(),
                     standby_refusal_.empty() ? "exit 78, names no primary" : standby_refusal_});
  std::vector<std::string> symptoms;
  try {
    pqxx::connection db(record_.admin_url);
    pqxx::work tx(db);
    for (const auto& r : tx.exec("SELECT job_id, kind, left(last_error, 160) FROM bankworker.jobs WHERE last_error ~*"
                                 " '(read-only transaction|terminating connection|server closed the connection|"
                                 "could not connect|connection refused|lease expired|the database system is|no primary)'"
                                 " ORDER BY job_id LIMIT 5")) {
      symptoms.push_back(r[0].as<std::string>() + " " + r[1].as<std::string>() + ": " + r[2].as<std::string>());
    }
  } catch (const std::exception& error) {
    symptoms.push_back(std::string("could not read the jobs: ") + error.what());
  }
  std::string listed;
  for (const auto& symptom : symptoms) listed += "; " + symptom;
  results.push_back({"no job carries a failover symptom as its error (none counted against it)", symptoms.empty(),
                     symptoms.empty() ? "none of the jobs' last errors is a connection problem" : listed.substr(2)});
  return results;
}

// Brings everything back, lets bankworker finish what it was given, and drains the workers.
// Time is fast-forwarded over retry back-offs (jobs' run_at), as if the clock had moved on.
bool chaos_run::settle(std::vector<std::string>& notes) {
  watchdog_->phase("settling: waiting for the PostgreSQL restart or the failovers to finish");
  if (postgres_thread_.joinable()) postgres_thread_.join();
  if (failover_thread_.joinable()) failover_thread_.join();
  if (probe_) {
    // Its refused events are in the storm, which delivers them below like any other.
    probe_->stop();
    for (auto& [id, body] : probe_->events()) record_.events[id] = {0, std::move(body)};
  }
  if (!postgres_error_.empty()) notes.push_back("PostgreSQL restart failed: " + postgres_error_);
  test::http_post(record_.plaid_url + "/sim/faults/clear", "{}");
  for (std::size_t i = 0; i < fleet_->size(); ++i) {
    if (!fleet_->up(i)) {
      fleet_->start(i);
      ++restarts_;
    }
  }
  watchdog_->phase("settling: waiting for the workers to be ready");
  auto deadline = clock::now() + limits::workers_ready_timeout;
  while (!fleet_->all_ready()) {
    note_exits();
    restarts_ += fleet_->restart_due();
    if (clock::now() > deadline) {
      notes.push_back("the workers were not all ready after the chaos phase");
      return false;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  watchdog_->phase("settling: delivering the webhooks still unacknowledged");
  deadline = clock::now() + limits::storm_drain_timeout;
  while (storm_->pending() > 0 || !deferred_.empty()) {
    run_deferred();
    if (clock::now() > deadline) {
      notes.push_back(std::to_string(storm_->pending()) + " webhook deliveries still unacknowledged after " +
                      std::to_string(limits::storm_drain_timeout.count()) + " s");
      return false;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  // One last sync of every active connection, asked after the faults were cleared and after the
  // last change at the bank: its result must equal Plaid's truth.
  for (const auto& c : active_connections()) {
    const auto asked = try_cli({"connections", "sync", "--tenant", c.tenant, "--connection", c.connection});
    if (asked.exit_code != 0) notes.push_back("final sync of " + c.connection + " refused: " + trimmed(asked.err));
  }
  watchdog_->phase("settling: waiting for every job to finish");
  deadline = clock::now() + limits::quiescence_timeout;
  pqxx::connection db(record_.admin_url);
  for (;;) {
    long busy = 0;
    {
      pqxx::work tx(db);
      tx.exec("UPDATE bankworker.jobs SET run_at = now() WHERE state IN ('available', 'retryable') AND run_at > now()");
      // Stripe events wait in the inbox for the posters (issue #21), a failed posting its backoff.
      tx.exec("UPDATE bankworker.stripe_events SET available_at = NULL WHERE state = 'received' AND available_at > now()");
      busy = tx.exec1("SELECT count(*) FROM bankworker.jobs WHERE state IN ('available', 'retryable', 'running')")[0].as<long>() +
             tx.exec1("SELECT count(*) FROM bankworker.stripe_events WHERE state IN ('received', 'fetching')")[0].as<long>();
      tx.commit();
    }
    if (busy == 0) break;
    if (clock::now() > deadline) {
      notes.push_back(std::to_string(busy) + " job(s) or unposted event(s) still waiting or running after " +
                      std::to_string(limits::quiescence_timeout.count()) + " s of settling");
      break;
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
  storm_counts_ = storm_->counts();
  storm_.reset();
  watchdog_->phase("settling: draining the workers (SIGTERM)");
  record_.drain_exit_codes = fleet_->drain();
  return true;
}

void chaos_run::print_summary(const std::vector<invariant_result>& results, double chaos_s, double settle_s) {
  const storm_counts storm = storm_counts_;
  std::ostringstream out;
  out << "\n== chaos run summary (seed " << options_.seed << ") ==\n";
  out << "chaos phase " << static_cast<long>(chaos_s) << " s, settle " << static_cast<long>(settle_s) << " s; "
      << options_.workers << " workers, " << options_.tenants << " tenants\n";
  out << "kills (kill -9): " << kills_ << ", worker restarts: " << restarts_ << ", unexpected worker exits: " << unexpected_exits_
      << ", start-ups refused while PostgreSQL was away: " << startup_refusals_
      << ", PostgreSQL restarts: " << postgres_restarts_ << " (down " << postgres_down_ms_ << " ms)"
      << ", commands retried after the outage: " << deferred_total_ << "\n";
  out << "actions:";
  for (const auto& [kind, count] : done_) out << " " << kind << " " << count << ";";
  out << "\n";
  if (!skipped_.empty()) {
    out << "skipped (nothing to act on):";
    for (const auto& [kind, count] : skipped_) out << " " << kind << " " << count << ";";
    out << "\n";
  }
  if (!refused_.empty()) {
    out << "refused:";
    for (const auto& [kind, count] : refused_) out << " " << kind << " " << count << ";";
    out << "\n";
    for (const auto& example : refusal_examples_) out << "  e.g. " << example << "\n";
  }
  out << "stripe: " << stripe_events_ << " events triggered, " << storm.sent << " deliveries sent, " << storm.accepted
      << " acknowledged, " << storm.refused << " refused (retried), " << storm.unanswered << " unanswered (retried)\n";
  out << "plaid: " << plaid_changes_ << " bank changes, " << record_.links_requested << " links, "
      << record_.revocations_requested.size() << " revocations\n";
  try {
    pqxx::connection db(record_.admin_url);
    pqxx::work tx(db);
    out << "processed by bankworker:";
    for (const auto& r : tx.exec("SELECT kind, count(*) FROM bankworker.jobs WHERE state = 'succeeded' GROUP BY 1 ORDER BY 1")) {
      out << " " << r[0].as<std::string>() << " " << r[1].as<std::string>() << ";";
    }
    out << " stripe events stored " << tx.exec1("SELECT count(*) FROM bankworker.stripe_events")[0].as<std::string>()
        << "; journal entries " << tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<std::string>()
        << "; bank transactions " << tx.exec1("SELECT count(*) FROM bankworker.transactions")[0].as<std::string>()
        << "; jobs retried (attempt > 1) "
        << tx.exec1("SELECT count(*) FROM bankworker.jobs WHERE attempt > 1")[0].as<std::string>() << "\n";
  } catch (const std::exception& error) {
    out << "(counts unavailable: " << error.what() << ")\n";
  }
  for (const auto& note : notes_) out << "note: " << note << "\n";
  out << "invariants:\n";
  bool all = true;
  for (const auto& r : results) {
    out << "  " << (r.passed ? "PASS " : "FAIL ") << r.name << ": " << r.detail << "\n";
    all = all && r.passed;
  }
  out << "result: " << (all ? "PASS" : "FAIL") << " — reproduce the schedule with: chaos_run --seed " << options_.seed
      << " --seconds " << options_.seconds << " --workers " << options_.workers << " --tenants " << options_.tenants << "\n";
  std::cout << out.str() << std::flush;
}

int chaos_run::run() {
  std::cout << "chaos run: seed " << options_.seed << ", " << options_.seconds << " s, " << options_.workers
            << " workers, " << options_.tenants << " tenants" << std::endl;
  auto schedule = make_schedule({options_.seed, seconds(options_.seconds), options_.tenants});
  if (options_.failover) {
    // The failovers are the run's only infrastructure faults: no worker is killed and PostgreSQL
    // is not restarted, so every gap and every retried job is the failover's.
    std::erase_if(schedule, [](const action& a) {
      return a.kind == action_kind::kill_worker || a.kind == action_kind::restart_postgres;
    });
  }
  std::size_t per_kind[action_kinds_count] = {};
  for (const auto& a : schedule) ++per_kind[static_cast<std::size_t>(a.kind)];
  std::cout << "schedule: " << schedule.size() << " actions, fingerprint " << std::hex << fingerprint(schedule) << std::dec << " (";
  for (std::size_t k = 0; k < action_kinds_count; ++k) {
    std::cout << (k ? ", " : "") << name_of(static_cast<action_kind>(k)) << " " << per_kind[k];
  }
  std::cout << ")" << std::endl;

  const seconds budget = seconds(options_.seconds) + (options_.failover ? limits::failover_run_overhead_max
                                                                         : limits::run_overhead_max);
  // On timeout the watchdog's thread stops the database with a script of its own (a process of
  // its own; the objects here may be mid-call on the main thread) and exits.
  watchdog_ = std::make_unique<run_watchdog>(budget, [this] {
    std::cout << "chaos_run: worker logs kept in " << dir_ << std::endl;
    if (ha_) std::cout << "chaos_run: " << ha_->stop_now() << std::endl;
    if (cluster_) cluster_->stop();
  });

  if (options_.failover && test::run_process("/bin/sh", {"-c", "command -v pg_autoctl"}, {{"PATH", std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin"}}, 10'000).exit_code != 0) {
    std::cout << "SKIP: pg_auto_failover is not installed (Debian postgresql-15-auto-failover; scripts/install-deps installs it)" << std::endl;
    return 77;
  }
  try {
    set_up();
  } catch (const std::exception& error) {
    std::cerr << "chaos_run: set-up failed: " << error.what() << " (files in " << dir_ << ")\n";
    return 3;
  }
  std::cout << "set up: private cluster, simulators, " << options_.workers << " workers ready; chaos begins" << std::endl;

  watchdog_->phase("chaos phase");
  const auto chaos_start = clock::now();
  if (options_.failover) failover_thread_ = std::thread([this, chaos_start] { run_failovers(chaos_start); });
  std::size_t next = 0;
  long last_report_s = 0;
  while (next < schedule.size() || clock::now() - chaos_start < seconds(options_.seconds)) {
    if (clock::now() - chaos_start >= seconds(options_.seconds)) break;
    restarts_ += fleet_->restart_due();
    note_exits();
    run_deferred();
    const auto elapsed = std::chrono::duration_cast<milliseconds>(clock::now() - chaos_start);
    while (next < schedule.size() && schedule[next].at <= elapsed) {
      try {
        execute(schedule[next]);
      } catch (const std::exception& error) {
        const std::string kind(name_of(schedule[next].kind));
        ++refused_[kind];
        if (refusal_examples_.size() < 8) refusal_examples_.push_back(kind + ": " + std::string(error.what()).substr(0, limits::reason_chars_max));
      }
      ++next;
    }
    const long elapsed_s = static_cast<long>(seconds_since(chaos_start));
    if (elapsed_s / 30 != last_report_s / 30) {
      const auto c = storm_->counts();
      std::cout << "  " << elapsed_s << " s: " << next << " actions, " << kills_ << " kills, " << c.accepted
                << " webhooks acknowledged, " << storm_->pending() << " waiting" << std::endl;
    }
    last_report_s = elapsed_s;
    std::this_thread::sleep_for(milliseconds(10));
  }
  const double chaos_s = seconds_since(chaos_start);
  std::cout << "chaos phase over after " << static_cast<long>(chaos_s) << " s; settling" << std::endl;

  const auto settle_start = clock::now();
  storm_counts_ = storm_->counts();
  bool settled = false;
  try {
    settled = settle(notes_);
  } catch (const std::exception& error) {
    notes_.push_back(std::string("settling failed: ") + error.what());
  }
  const double settle_s = seconds_since(settle_start);
  std::vector<invariant_result> results;
  if (settled) {
    watchdog_->phase("checking the invariants");
    results = check_invariants(record_);
    if (options_.failover) {
      for (auto& result : check_failovers()) results.push_back(std::move(result));
    }
  } else {
    results.push_back({"the run settled", false, "see the notes above"});
  }
  print_summary(results, chaos_s, settle_s);
  bool all = true;
  for (const auto& r : results) all = all && r.passed;
  if (!all || options_.keep) {
    std::cout << "worker logs kept in " << dir_ << std::endl;
    if (ha_ && options_.keep) std::cout << "PostgreSQL formation left running: " << ha_->keep() << " scripts/pg-ha status" << std::endl;
  } else {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  return all ? 0 : 1;
}

}  // namespace
}  // namespace bankworker::chaos

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 3;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  // A worker that dies mid-answer must not take the driver with it.
  ::signal(SIGPIPE, SIG_IGN);
  const auto options = bankworker::chaos::parse_options(argc, argv);
  const int code = bankworker::chaos::chaos_run(options).run();
  curl_global_cleanup();
  return code;
}
