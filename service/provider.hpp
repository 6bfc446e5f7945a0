#pragma once
// The one interface through which a provider (Plaid, Stripe, …) plugs into the runtime. The
// runtime (worker/) knows providers only through it: it asks each for its settings, its CLI
// verbs, and, once started on the runtime's shared parts, for its job kinds, webhook routes,
// notification channels, scheduled tasks and database gauges. Nothing else crosses.
//
// Life of a provider in `bankworker run`:
//   configure(env)  → reads and validates its own environment variables (problems, one line each);
//   start(parts)    → builds its clients and handlers on the runtime's parts, returns what it adds.
//                      An unconfigured provider adds no handlers and no routes (its job kinds are
//                      never claimed by this process, so they wait, attempts untouched, for a
//                      process that has the settings) but still its scheduled tasks and gauges,
//                      which need only the database (Plaid's periodic syncs are enqueued by any
//                      process, and run by one that can);
//   reload()        → SIGHUP: re-read what may be re-read (secrets from files), keep the old on error;
//   stop()          → the first SIGTERM: stop background work (key refreshes), before the drain.
// For a CLI command, only configure() and the command's run function are called.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>

#include "connectors/http/client.hpp"
#include "core/currency.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "queue/listener.hpp"
#include "queue/queue.hpp"
#include "service/admin_page.hpp"
#include "service/command.hpp"
#include "service/config.hpp"
#include "service/http.hpp"
#include "service/job.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"

namespace bankworker::service {

// The runtime's shared parts, lent to a started provider. All outlive the provider.
struct runtime_parts {
  boost::asio::io_context& io;
  boost::asio::thread_pool& blocking;  // the DB thread pool (queue::run_blocking)
  db::pool& connections;
  db::key_store& keys;
  const core::currency_table& currencies;
  queue::job_queue& jobs;
  connectors::http::client& http;
  metrics_registry& metrics;
  logger& log;
};

struct job_kind_handler {
  std::string kind;
  job_handler handler;
};

// Periodic work the scheduler runs (worker/scheduler.hpp). Blocking, on the DB thread pool, one
// task at a time. `now` is the injected clock's time as SQL text in tests, empty in production
// (the database's clock decides).
struct scheduled_task {
  // A task with an interval runs once per interval across every process sharing the database
  // (its row in bankworker.schedules, claimed by one); a failure brings it forward by the
  // scheduler's retry delay. Interval zero: every tick, in every process (the work itself must be
  // safe to run concurrently, e.g. claims with SKIP LOCKED).
  std::string name;
  std::chrono::milliseconds interval{0};
  // Returns true when more work is due at once (a backlog): the scheduler ticks again soon.
  std::function<bool(const std::optional<std::string>& now)> run;
};

// A statement the database gauges send in their one pipelined round trip every few seconds
// (worker/database_gauges.hpp), and what reads its answer into the provider's own gauges.
struct database_gauge {
  const char* sql;  // a constant, no parameters
  std::function<void(const pqxx::result&)> read;
};

// What a started provider adds to the runtime.
struct provider_parts {
  std::vector<job_kind_handler> handlers;
  std::vector<http_route> routes;                     // on the webhook port
  std::vector<queue::listener_channel> channels;      // on the dispatcher's LISTEN connection
  std::vector<scheduled_task> tasks;
  std::vector<database_gauge> gauges;
  std::vector<std::string> status_lines;              // said once at start ("Stripe Connect endpoint on: …")
  std::vector<admin_page> admin_pages;                // the operator console's pages (admin address)
};

// A CLI verb group ("plaid", "stripe", "connections") and the help of each of its commands.
struct command_group {
  std::string_view name;
  command_function run;
  std::vector<command_help> help;  // the group first, then its members
};

class provider {
 public:
  virtual ~provider() = default;

  virtual std::string_view name() const noexcept = 0;
  // Every job kind this provider's handlers run, whether configured or not.
  virtual std::vector<std::string> job_kinds() const = 0;
  virtual std::vector<command_group> commands() const = 0;

  // Reads the provider's environment variables through `env`, which records each problem as
  // "VARIABLE: what is wrong" without the value. Called once, before start().
  virtual void configure(env_reader& env) = 0;
  // Whether configure() found the settings the provider needs to run its jobs.
  virtual bool configured() const noexcept = 0;
  // Secrets the process log must never print (its client secret, …): the logger scrubs them.
  virtual std::vector<const crypto::secret*> log_secrets() const { return {}; }

  // Builds the provider on the runtime's parts; see the life of a provider above.
  virtual provider_parts start(runtime_parts parts) = 0;
  virtual void reload() {}
  virtual void stop() {}
};

// Every provider this binary was built with, in a fixed order (CMake's BW_PROVIDERS writes the
// list; see service/CMakeLists.txt).
std::vector<std::unique_ptr<provider>> all_providers();

}  // namespace bankworker::service
