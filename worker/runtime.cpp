#include "worker/runtime.hpp"

#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include <atomic>
#include <map>
#include <cstdlib>
#include <thread>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "connectors/http/client.hpp"
#include "console/console.hpp"
#include "core/limits.hpp"
#include "db/currencies.hpp"
#include "db/connect.hpp"
#include "db/connection_problem.hpp"
#include "db/migrate.hpp"
#include "crypto/secret.hpp"
#include "queue/queue.hpp"
#include "queue/run_blocking.hpp"
#include "queue/worker_processes.hpp"
#include "worker/build_info.hpp"
#include "service/command.hpp"
#include "worker/database_gauges.hpp"
#include "worker/dispatcher.hpp"
#include "worker/reconcile_jobs.hpp"
#include "worker/http_server.hpp"
#include "service/metrics.hpp"
#include "worker/readiness.hpp"
#include "worker/scheduler.hpp"
#include "service/provider.hpp"

namespace bankworker::worker {

using service::logger;
using service::log_level;
using service::metrics_registry;
using service::duration_histogram;
using service::command_error;
using service::one_line;
using service::connect_as_login_user;
using service::open_key_store;
using service::settings;
using service::read_log_level_file;
using service::webhook_requests_name;
using service::webhook_requests_help;
using service::add_build_info;
using service::add_process_metrics;
using service::process_resident_bytes;

namespace asio = boost::asio;

namespace {

constexpr unsigned io_threads = 2;
constexpr std::size_t admin_connections_max = 64;
constexpr std::size_t admin_body_bytes_max = 8'192;  // the console's small forms (a password is at most 1 KiB)
// How often a process records that it is alive (from the gauges' loop, whose refresh_interval is
// finer); the console calls a process silent after three intervals without one.
constexpr std::chrono::seconds process_heartbeat_interval{15};
constexpr std::size_t pool_connections_extra = 6;  // inbox committer, readiness, secrets, listener, scheduler, gauges

void check_schema(const settings& config) {
  const auto connection = connect_as_login_user(config);
  std::vector<std::string> pending;
  try {
    pending = db::pending_migrations(*connection, db::embedded_migrations());
  } catch (const db::migration_error& error) {
    throw command_error{one_line(error.what())};
  }
  if (!pending.empty()) {
    throw command_error{"the database schema is older than this binary (" + std::to_string(pending.size()) +
                        " migration(s) pending, first " + pending.front() + "); run 'bankworker migrate'"};
  }
}

// Why the schema is not the one this binary was built for (empty when it is): checked by /readyz
// (at most once per readyz_database_check_interval_ms), so a worker whose database was restored
// to, or rolled back to, an older schema stops taking traffic instead of failing requests one by
// one. Throws when the database cannot be asked.
std::string schema_unready_reason(db::pool& connections, const db::schema_check& schema) {
  auto lease = connections.checkout();
  std::vector<std::string> pending;
  try {
    pending = schema.pending(lease.connection());
  } catch (const db::migration_error& error) {
    return "schema does not match this binary: " + one_line(error.what());
  }
  if (pending.empty()) return {};
  return "schema older than this binary: migration " + pending.front() + " not applied (" +
         std::to_string(pending.size()) + " pending)";
}

// /readyz's database check: the schema on a pooled connection, run on the DB threads. `blocking`,
// `connections` and `schema` outlive the io_context.
asio::awaitable<std::string> check_readiness(asio::thread_pool* blocking, db::pool* connections,
                                             const db::schema_check* schema) {
  try {
    co_return co_await queue::run_blocking(*blocking, [connections, schema] {
      return schema_unready_reason(*connections, *schema);
    });
  } catch (const pqxx::broken_connection& error) {
    co_return "database unreachable: " + connections->unavailable_reason().value_or(db::problem_summary(error));
  } catch (const db::pool_timeout&) {
    co_return "database unreachable: no pooled connection free (db_checkout_timeout_ms)";
  } catch (const std::exception&) {
    // The server answered but the check failed; its text stays in the database log.
    co_return "database check failed";
  }
}

// SIGHUP: the level from BANKWORKER_LOG_LEVEL_FILE when it is set (the environment of a running
// process cannot change). A file that cannot be read or holds no level keeps the current level:
// a typo must not silence the logs or stop the worker.
void reload_log_level(const settings& config, logger& log) {
  if (!config.log_level_file) return;
  std::string why;
  if (const auto level = read_log_level_file(*config.log_level_file, why)) {
    const log_level before = log.level();
    if (*level == before) return;
    // Said at info under whichever of the two levels is more verbose, so the change is on record
    // whether the logs grow quieter or louder.
    const auto say = [&] { log.info("log level changed", {{"from", to_string(before)}, {"to", to_string(*level)}}); };
    if (*level > before) {
      say();
      log.set_level(*level);
    } else {
      log.set_level(*level);
      say();
    }
  } else {
    log.warn("BANKWORKER_LOG_LEVEL_FILE: " + why + "; keeping the current log level",
             {{"log_level", to_string(log.level())}});
  }
}

http_response text(unsigned status, std::string body) {
  return http_response{status, "text/plain; charset=utf-8", std::move(body), {}};
}

// The HTTP server may hold connections_max sockets besides the pool's connections and the
// process's own files; the usual soft limit (1,024) is below that, so raise it towards the hard
// limit. Returns the soft limit in effect.
rlim_t raise_open_files_limit(rlim_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur >= wanted) return limit.rlim_cur;
  const rlim_t target = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  rlimit raised = limit;
  raised.rlim_cur = target;
  return ::setrlimit(RLIMIT_NOFILE, &raised) == 0 ? target : limit.rlim_cur;
}

using providers_list = std::vector<std::unique_ptr<service::provider>>;

// The HTTP server may hold connections_max sockets besides the pool's and the process's own files.
void raise_file_limit(logger& log) {
  const http_settings defaults;
  constexpr rlim_t own_files_margin = 256;  // pool, listener, logs, libcurl, /proc reads
  const rlim_t wanted = defaults.connections_max + limits::db_connections_max + own_files_margin;
  const rlim_t open_files = raise_open_files_limit(wanted);
  if (open_files < wanted) {
    log.warn("the open file limit is below what the HTTP server's connection cap needs; raise LimitNOFILE",
             {{"open_files_max", static_cast<std::uint64_t>(open_files)}, {"wanted", static_cast<std::uint64_t>(wanted)}});
  }
}

std::vector<const crypto::secret*> log_secrets(const providers_list& providers) {
  std::vector<const crypto::secret*> secrets;
  for (const auto& provider : providers) {
    for (const crypto::secret* secret : provider->log_secrets()) secrets.push_back(secret);
  }
  return secrets;
}

// Every kind a provider runs (their gauges exist from start-up), and those of the providers this
// process cannot run (never claimed here: they wait, attempts untouched, for a process that can).
std::vector<std::string> job_kinds(const providers_list& providers, bool unconfigured_only) {
  std::vector<std::string> kinds;
  for (const auto& provider : providers) {
    if (unconfigured_only && provider->configured()) continue;
    for (std::string& kind : provider->job_kinds()) kinds.push_back(std::move(kind));
  }
  return kinds;
}

// The pool's size and connect timeout, the histogram of time spent waiting for a connection, and
// the log lines when the database goes away and comes back.
db::pool_settings pool_settings_for(const settings& config, metrics_registry& metrics, logger& log) {
  duration_histogram& pool_wait = metrics.add_histogram(
      "bankworker_db_pool_wait_seconds", "Time spent waiting for a free database connection from the pool.", {},
      {100, 500, 1'000, 5'000, 10'000, 50'000, 100'000, 500'000, 1'000'000, 5'000'000});
  db::pool_settings pool_config;
  pool_config.observe_wait = [&pool_wait](std::chrono::microseconds waited) {
    pool_wait.record_us(static_cast<std::uint64_t>(waited.count()));
  };
  pool_config.connections =
      std::min<std::size_t>(limits::db_connections_max, config.concurrency + pool_connections_extra);
  pool_config.connect_timeout = config.database_connect_timeout;
  // A failover (or any outage) is logged once when it starts and once when it ends.
  pool_config.on_availability = [&log](bool available, const std::string& why, std::chrono::milliseconds away) {
    // At warn too, so that a log filtered to warnings still shows where the outage ended.
    if (available) log.warn("database available again", {{"away_ms", static_cast<std::uint64_t>(away.count())}});
    else log.warn("database unavailable; webhooks answer 503 and jobs wait until it is back", {{"reason", why}});
  };
  return pool_config;
}

// The LISTEN connection opens outside the pool: it gets the same connect timeout in its URL.
crypto::secret listen_url_of(const settings& config) {
  std::string url(config.database_url.reveal().text());
  db::add_connect_timeout(url, config.database_connect_timeout);
  crypto::secret copy = crypto::secret::copy_of(url);
  sodium_memzero(url.data(), url.size());
  return copy;
}

core::currency_table read_currencies(db::pool& connections) {
  auto lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection());
  return db::load_currencies(tx);
}

void add_process_series(metrics_registry& metrics, db::key_store& keys, const db::pool& connections,
                        std::size_t pool_size) {
  metrics.add_counter_reader("bankworker_key_cache_hits_total",
                             "Tenant key lookups answered from the unwrapped key cache.", {},
                             [&keys] { return keys.cache().hits(); });
  metrics.add_counter_reader("bankworker_key_cache_misses_total",
                             "Tenant key lookups that had to unwrap the key with the root key.", {},
                             [&keys] { return keys.cache().misses(); });
  add_build_info(metrics, build_version(), build_commit());
  add_process_metrics(metrics);
  metrics.add_gauge("bankworker_process_resident_memory_bytes", "Resident memory of this process.", {},
                    process_resident_bytes);
  metrics.add_gauge("bankworker_db_pool_connections_in_use", "Database connections checked out of the pool.", {},
                    [&connections] { return static_cast<std::int64_t>(connections.in_use()); });
  metrics.add_gauge("bankworker_db_pool_connections", "Size of the database connection pool.", {},
                    [pool_size] { return static_cast<std::int64_t>(pool_size); });
}

dispatcher_settings dispatch_settings_for(const settings& config, std::vector<std::string> never_claim) {
  dispatcher_settings dispatch_config;
  dispatch_config.concurrency = config.concurrency;
  dispatch_config.drain_timeout = config.drain_timeout;
  // Heartbeats well inside the lease, so a live job never loses it to a slow round trip.
  dispatch_config.heartbeat_interval = std::min(
      dispatch_config.heartbeat_interval, std::chrono::duration_cast<std::chrono::milliseconds>(config.job_lease) / 3);
  // Retention runs once per interval across all processes, in the scheduler.
  dispatch_config.prune_interval = std::chrono::milliseconds(0);
  dispatch_config.never_claim_kinds = std::move(never_claim);
  return dispatch_config;
}

// Where each provider's additions go.
struct plug_points {
  dispatcher& jobs;
  scheduler& periodic;
  database_gauges& gauges;
  std::vector<http_route>& routes;
  std::vector<service::admin_page>& admin_pages;
};

// Starts every provider on the runtime's parts and plugs in what it adds.
void start_providers(providers_list& providers, const service::runtime_parts& parts, plug_points into) {
  for (const auto& provider : providers) {
    if (!provider->configured()) {
      parts.log.warn("provider not configured: this process claims none of its jobs",
                     {{"provider", provider->name()}});
    }
    service::provider_parts added = provider->start(parts);
    for (service::job_kind_handler& handler : added.handlers) {
      into.jobs.add_handler(std::move(handler.kind), std::move(handler.handler));
    }
    for (http_route& route : added.routes) into.routes.push_back(std::move(route));
    for (service::admin_page& page : added.admin_pages) into.admin_pages.push_back(std::move(page));
    for (queue::listener_channel& channel : added.channels) into.jobs.listen_also(std::move(channel));
    for (service::scheduled_task& task : added.tasks) into.periodic.add_task(std::move(task));
    for (service::database_gauge& gauge : added.gauges) into.gauges.add_gauge(std::move(gauge));
    for (const std::string& line : added.status_lines) parts.log.info(line);
  }
}

// The admin address serves health, readiness and metrics; the webhook port serves webhooks only.
// /readyz also wants the LISTEN connection in place: until it is, a secret removed elsewhere is not
// forgotten here, and jobs are found by the poll fallback only.
std::vector<http_route> admin_routes(metrics_registry& metrics, readiness& ready, const std::atomic<bool>& draining,
                                     const dispatcher& jobs) {
  std::vector<http_route> routes;
  routes.push_back({"GET", "/healthz", false, [](http_request) -> asio::awaitable<http_response> {
                      co_return text(200, "ok\n");
                    }});
  routes.push_back({"GET", "/readyz", false, [&ready, &draining, &jobs](http_request) -> asio::awaitable<http_response> {
                      if (draining.load()) co_return text(503, "draining\n");
                      const std::string unready = co_await ready.unready_reason();
                      if (!unready.empty()) co_return text(503, unready + "\n");
                      if (!jobs.listening()) co_return text(503, "not yet listening for notifications\n");
                      co_return text(200, "ready\n");
                    }});
  routes.push_back({"GET", "/metrics", false, [&metrics](http_request) -> asio::awaitable<http_response> {
                      co_return http_response{200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(), {}};
                    }});
  return routes;
}

// Handler latency per route and the webhook providers' too-large counters, registered before the
// servers start so that a request only reads the maps. The routes vectors are moved into the
// servers, which keep their elements where they are, so the pointers stay valid.
class http_observers {
 public:
  http_observers(metrics_registry& metrics, logger& log, const std::vector<http_route>& routes,
                 const std::vector<http_route>& admin)
      : log_(log),
        unrouted_(metrics.add_histogram("bankworker_http_request_duration_seconds",
                                        "Time to answer an HTTP request, by route.", {{"route", "other"}})) {
    for (const auto* served : {&routes, &admin}) {
      for (const http_route& route : *served) {
        latency_[&route] = &metrics.add_histogram("bankworker_http_request_duration_seconds",
                                                  "Time to answer an HTTP request, by route.",
                                                  {{"route", route.method + " " + route.path}});
      }
    }
    // A webhook body the server refuses for its size is a webhook outcome of that provider too.
    for (const http_route& route : routes) {
      constexpr std::string_view prefix = "/webhooks/";
      if (!route.path.starts_with(prefix)) continue;
      const std::string_view rest = std::string_view(route.path).substr(prefix.size());
      const std::string provider(rest.substr(0, rest.find('/')));
      too_large_[&route] = &metrics.add_counter(webhook_requests_name, webhook_requests_help,
                                                {{"provider", provider}, {"outcome", "too_large"}});
    }
  }

  void observe(const http_route* route, unsigned status, std::chrono::microseconds elapsed) const {
    const auto found = route != nullptr ? latency_.find(route) : latency_.end();
    (found != latency_.end() ? *found->second : unrouted_).record_us(static_cast<std::uint64_t>(elapsed.count()));
    // The access log, at debug only: the route's pattern (never the tenant in the path), status, time.
    if (log_.enabled(service::log_level::debug)) {
      log_.debug("http request", {{"route", route != nullptr ? route->method + " " + route->path : std::string("other")},
                                  {"status", status},
                                  {"elapsed_us", static_cast<std::int64_t>(elapsed.count())}});
    }
  }

  void observe_too_large(const http_route* route) const {
    const auto refused = too_large_.find(route);
    if (refused != too_large_.end()) refused->second->fetch_add(1, std::memory_order_relaxed);
  }

 private:
  logger& log_;
  duration_histogram& unrouted_;
  std::map<const http_route*, duration_histogram*> latency_;
  std::map<const http_route*, metrics_registry::counter*> too_large_;
};

// The webhook server's and the admin server's settings, both observed.
std::pair<http_settings, http_settings> server_settings(const settings& config, const http_observers& observers) {
  http_settings webhook_config;
  webhook_config.listen = config.http_listen;
  webhook_config.observe_too_large = [&observers](const http_route* route) { observers.observe_too_large(route); };
  webhook_config.observe = [&observers](const http_route* route, unsigned status, std::chrono::microseconds elapsed) {
    observers.observe(route, status, elapsed);
  };
  webhook_config.body_bytes_max = limits::webhook_body_bytes_max;
  http_settings admin_config = webhook_config;
  admin_config.listen = config.admin_listen;
  admin_config.observe_too_large = nullptr;
  // Prometheus, a load balancer's health check and an operator: a few connections, no bodies.
  admin_config.connections_max = admin_connections_max;
  admin_config.body_bytes_max = admin_body_bytes_max;
  return {std::move(webhook_config), std::move(admin_config)};
}

void add_server_metrics(metrics_registry& metrics, const http_server& server) {
  constexpr std::string_view refused_name = "bankworker_http_refused_total";
  constexpr std::string_view refused_help = "Connections and requests the HTTP server refused before any route, by reason.";
  metrics.add_counter_reader(refused_name, refused_help, {{"reason", "too_large"}},
                             [&server] { return server.counters().too_large; });
  metrics.add_counter_reader(refused_name, refused_help, {{"reason", "header_timeout"}},
                             [&server] { return server.counters().header_timeouts; });
  metrics.add_counter_reader(refused_name, refused_help, {{"reason", "connection_limit"}},
                             [&server] { return server.counters().refused_connections; });
  metrics.add_counter_reader(refused_name, refused_help, {{"reason", "bad_request"}},
                             [&server] { return server.counters().bad_requests; });
}

// Everything that runs until the stop: stopped together by the first signal (which then drains
// the dispatcher) and once more when the dispatcher has finished.
struct running_parts {
  http_server& server;
  http_server& admin;
  scheduler& periodic;
  database_gauges& gauges;
  providers_list& providers;

  void stop() const {
    server.stop();
    admin.stop();
    periodic.stop();
    gauges.stop();
    for (const auto& provider : providers) provider->stop();
  }
};

// Signals: the first SIGTERM/SIGINT drains, a second exits at once; SIGHUP reloads what can be
// reloaded (providers' secrets, the log level file), leaving every connection open. Under
// systemd, the watchdog is fed from the event loop, and only while the database answers.
class process_signals {
 public:
  process_signals(asio::io_context& io, asio::thread_pool& blocking, db::pool& connections, const settings& config,
                  logger& log)
      : io_(io), blocking_(blocking), connections_(connections), config_(config), log_(log),
        stop_signals_(io, SIGTERM, SIGINT), reload_signals_(io, SIGHUP), watchdog_(io) {}

  void start(std::atomic<bool>& draining, running_parts parts, dispatcher& jobs_dispatcher, providers_list& providers) {
    on_stop_ = [this, &draining, parts, &jobs_dispatcher](const boost::system::error_code& error, int number) {
      if (error) return;
      if (draining.exchange(true)) {
        log_.warn("second signal: exiting at once", {{"signal", number}});
        std::_Exit(1);
      }
      log_.info("stopping: draining jobs", {{"signal", number}, {"drain_timeout_s", config_.drain_timeout.count()}});
      sd_notify(0, "STOPPING=1");
      parts.stop();
      jobs_dispatcher.stop();
      stop_signals_.async_wait(on_stop_);
    };
    stop_signals_.async_wait(on_stop_);
    on_reload_ = [this, &providers](const boost::system::error_code& error, int) {
      if (error) return;
      for (const auto& provider : providers) provider->reload();
      reload_log_level(config_, log_);
      log_.info("reloaded: webhook secrets will be read again", {{"log_level", to_string(log_.level())}});
      reload_signals_.async_wait(on_reload_);
    };
    reload_signals_.async_wait(on_reload_);
    std::uint64_t watchdog_usec = 0;
    if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) feed(std::chrono::microseconds(watchdog_usec / 2));
  }

  void cancel() {
    stop_signals_.cancel();
    reload_signals_.cancel();
    watchdog_.cancel();
  }

 private:
  void feed(std::chrono::microseconds every) {
    watchdog_.expires_after(every);
    watchdog_.async_wait([this, every](const boost::system::error_code& error) {
      if (error) return;
      asio::co_spawn(io_, [this, every]() -> asio::awaitable<void> {
        try {
          co_await queue::run_blocking(blocking_, [this] {
            auto lease = connections_.checkout();
            db::ping(lease.connection());
          });
          sd_notify(0, "WATCHDOG=1");
        } catch (const std::exception&) {
          // No ping: systemd restarts a worker whose database stays unreachable past WatchdogSec.
        }
        feed(every);
      }, asio::detached);
    });
  }

  asio::io_context& io_;
  asio::thread_pool& blocking_;
  db::pool& connections_;
  const settings& config_;
  logger& log_;
  asio::signal_set stop_signals_;
  asio::signal_set reload_signals_;
  asio::steady_timer watchdog_;
  std::function<void(const boost::system::error_code&, int)> on_stop_;
  std::function<void(const boost::system::error_code&, int)> on_reload_;
};

// Spawns the long-running coroutines; when the dispatcher has drained, everything stops.
void spawn_loops(asio::io_context& io, scheduler& periodic, database_gauges& gauges, dispatcher& jobs_dispatcher,
                 running_parts parts, process_signals& signals, connectors::http::client& http, logger& log,
                 bool& clean) {
  asio::co_spawn(periodic.executor(), periodic.run(), [&log](std::exception_ptr failure) {
    // run() handles each tick's failure itself; anything escaping is a bug, so it is not hidden.
    if (failure) log.error("the scheduler stopped unexpectedly; periodic syncs and maintenance wait");
  });
  asio::co_spawn(gauges.executor(), gauges.run(), [&log](std::exception_ptr failure) {
    // run() handles each refresh's failure itself; anything escaping is a bug.
    if (failure) log.error("the database gauges stopped unexpectedly; they keep their last values");
  });
  asio::co_spawn(jobs_dispatcher.executor(), jobs_dispatcher.run(),
                 [&io, &http, &signals, &clean, parts](std::exception_ptr failure) {
                   clean = failure == nullptr;
                   http.shutdown();
                   parts.stop();
                   signals.cancel();
                   io.stop();
                 });
}

void run_io(asio::io_context& io, asio::thread_pool& blocking) {
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  blocking.join();
}

// The line that says the process is up, with the addresses it serves.
void log_running(logger& log, const settings& config, const http_server& server, const http_server& admin_server,
                 const dispatcher& jobs_dispatcher) {
  log.info("bankworker running", {{"listen", config.http_listen.host + ":" + std::to_string(server.port())},
                                  {"admin_listen", config.admin_listen.host + ":" + std::to_string(admin_server.port())},
                                  {"concurrency", config.concurrency},
                                  // The id `jobs show` names as each failed attempt's worker.
                                  {"worker_id", jobs_dispatcher.owner().to_string()},
                                  {"version", build_version()},
                                  {"commit", build_commit()}});
}

// This process as the console's process list shows it: the dispatcher's id (the worker_id of the
// log line and of every failed attempt), host, pid and version.
queue::worker_process_identity process_identity(const dispatcher& jobs_dispatcher) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return {.id = jobs_dispatcher.owner(), .hostname = host, .pid = static_cast<std::int32_t>(::getpid()),
          .version = std::string(build_version()), .heartbeat_interval = process_heartbeat_interval};
}

// systemd hears READY=1 when /readyz would say ready: once the LISTEN connection is in place.
void notify_ready_when_listening(dispatcher& jobs_dispatcher) {
  jobs_dispatcher.when_listening([told = false]() mutable {
    if (!std::exchange(told, true)) sd_notify(0, "READY=1");
  });
}

// Marks the process stopped once everything has stopped. A process that cannot (the database is
// away) stays in the list as silent until its row is pruned: nothing else depends on the mark.
void mark_stopped(queue::worker_process_record& process, logger& log) {
  try {
    process.stop();
  } catch (const std::exception& error) {
    log.warn("could not mark this process stopped in the process list; the console shows it silent",
             {{"error", one_line(error.what())}});
  }
}

}  // namespace

// The wiring, top to bottom: database, keys and queue; the dispatcher, scheduler and gauges; the
// providers plugged into them; the two HTTP servers; signals; run until drained.
int run_service(settings& config, providers_list configured) {
  logger log(config.level, 2, log_secrets(configured));
  raise_file_limit(log);
  check_schema(config);
  metrics_registry metrics;
  const db::pool_settings pool_config = pool_settings_for(config, metrics, log);
  const crypto::secret listen_url = listen_url_of(config);
  db::pool connections(std::move(config.database_url), pool_config);
  const auto keys = open_key_store(config, connections);
  const core::currency_table currencies = read_currencies(connections);
  queue::queue_settings queue_config;
  queue_config.lease = config.job_lease;
  queue::job_queue jobs(connections, queue_config);
  asio::io_context io;
  asio::thread_pool blocking(pool_config.connections);
  add_process_series(metrics, *keys, connections, pool_config.connections);

  dispatcher jobs_dispatcher(io, blocking, jobs, &listen_url,
                             dispatch_settings_for(config, job_kinds(configured, true)), log);
  jobs_dispatcher.set_metrics(metrics);
  connectors::http::client http(io, {});
  std::vector<std::string> gauge_kinds = job_kinds(configured, false);
  gauge_kinds.emplace_back(reconcile_match_kind);
  database_gauges gauges(io, blocking, connections, metrics, log, gauge_kinds);
  queue::worker_process_record process(connections, process_identity(jobs_dispatcher));
  process.beat();  // registered before any job is claimed; the gauges' loop beats from here on
  gauges.add_heartbeat(process);
  scheduler periodic(io, blocking, connections, jobs, scheduler_settings{}, log, &metrics);
  // Declared after every part the providers use (and before what uses them), so they are
  // destroyed first: their timers and routes go before the io_context and the pool.
  providers_list providers = std::move(configured);
  std::vector<http_route> routes;
  std::vector<service::admin_page> admin_pages;
  start_providers(providers, {io, blocking, connections, *keys, currencies, jobs, http, metrics, log},
                  {jobs_dispatcher, periodic, gauges, routes, admin_pages});
  add_reconciliation(jobs_dispatcher, periodic, gauges, connections, *keys, metrics);  // a built-in, no provider's

  std::atomic<bool> draining{false};
  const db::schema_check schema(db::embedded_migrations());
  readiness ready([&blocking, &connections, &schema] { return check_readiness(&blocking, &connections, &schema); },
                  limits::readyz_database_check_interval_ms);
  metrics.add_counter_reader("bankworker_readyz_database_checks_total",
                             "Database checks /readyz made (at most one per readyz_database_check_interval_ms).", {},
                             [&ready] { return ready.checks(); });
  std::vector<http_route> admin = admin_routes(metrics, ready, draining, jobs_dispatcher);
  // The operator console on the admin address (issue #22); declared before the server, so it
  // outlives the routes that refer to it.
  console::console operator_console({blocking, connections, *keys, jobs}, console::console_settings{},
                                    std::move(admin_pages));
  for (http_route& route : operator_console.routes()) admin.push_back(std::move(route));
  const http_observers observers(metrics, log, routes, admin);
  auto [webhook_config, admin_config] = server_settings(config, observers);
  http_server server(io, std::move(webhook_config), std::move(routes));
  http_server admin_server(io, std::move(admin_config), std::move(admin));
  add_server_metrics(metrics, server);
  server.start();
  admin_server.start();

  const running_parts running{server, admin_server, periodic, gauges, providers};
  process_signals signals(io, blocking, connections, config, log);
  signals.start(draining, running, jobs_dispatcher, providers);
  bool clean = false;
  notify_ready_when_listening(jobs_dispatcher);
  spawn_loops(io, periodic, gauges, jobs_dispatcher, running, signals, http, log, clean);
  log_running(log, config, server, admin_server, jobs_dispatcher);
  run_io(io, blocking);
  mark_stopped(process, log);
  log.info("bankworker stopped", {{"clean", clean}});
  return clean ? 0 : 1;
}

}  // namespace bankworker::worker
