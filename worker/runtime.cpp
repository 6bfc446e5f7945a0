#include "worker/runtime.hpp"

#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <atomic>
#include <map>
#include <cstdlib>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "connectors/http/client.hpp"
#include "connectors/plaid/client.hpp"
#include "core/limits.hpp"
#include "db/connect.hpp"
#include "db/connection_problem.hpp"
#include "db/inbox.hpp"
#include "db/migrate.hpp"
#include "connectors/stripe/signature.hpp"
#include "crypto/secret.hpp"
#include "db/stripe_store.hpp"
#include "queue/queue.hpp"
#include "queue/run_blocking.hpp"
#include "worker/build_info.hpp"
#include "worker/cli_support.hpp"
#include "worker/database_gauges.hpp"
#include "worker/dispatcher.hpp"
#include "worker/http_server.hpp"
#include "worker/metrics.hpp"
#include "worker/plaid_jobs.hpp"
#include "worker/plaid_webhooks.hpp"
#include "worker/readiness.hpp"
#include "worker/scheduler.hpp"
#include "worker/stripe_api_jobs.hpp"
#include "worker/stripe_webhooks.hpp"

namespace bankworker::worker {

namespace asio = boost::asio;

namespace {

constexpr unsigned io_threads = 2;
constexpr std::size_t admin_connections_max = 64;
constexpr std::size_t admin_body_bytes_max = 4'096;  // only GETs are routed there
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

// The Plaid environment a base URL points at; it is bound into every sealed access token, so a
// token sealed for the sandbox never opens for production.
std::string plaid_environment(std::string_view base_url) {
  if (base_url.find("sandbox") != std::string_view::npos) return "sandbox";
  if (base_url.find("development") != std::string_view::npos) return "development";
  if (connectors::http::client::url_allowed(base_url) && base_url.starts_with("http://")) return "sandbox";
  return "production";
}

// The webhook route's key fetcher: Plaid's /webhook_verification_key/get. An unknown kid is an
// answer (nothing); anything else that went wrong throws, and the route answers 503.
asio::awaitable<std::optional<plaid::verification_key>> fetch_plaid_key(const plaid::client* api, std::string kid) {
  plaid::result<plaid::verification_key> fetched = co_await api->get_webhook_verification_key(std::move(kid));
  if (fetched.ok()) co_return std::move(fetched.value);
  if (fetched.failure.kind == plaid::error_class::invalid_request) co_return std::nullopt;
  throw std::runtime_error("Plaid's verification key could not be fetched: " +
                           std::string(plaid::to_string(fetched.failure.kind)));
}

bool plaid_configured(const settings& config) {
  return !config.plaid_base_url.empty() && !config.plaid_client_id.empty() && !config.plaid_secret.empty();
}

// The Connect platform endpoint's signing secret, read into guarded memory; nothing when
// BANKWORKER_STRIPE_PLATFORM_SECRET_FILE is not set. A file that is unreadable, too open or holds
// no whsec_ secret stops start-up: a platform endpoint that verifies nothing would answer 400 to
// every Connect delivery until Stripe gives up.
std::optional<crypto::secret> read_platform_secret(const settings& config) {
  if (!config.stripe_platform_secret_file) return std::nullopt;
  try {
    crypto::secret secret =
        crypto::read_secret_file(*config.stripe_platform_secret_file, crypto::file_permissions::owner_or_group_only);
    if (!stripe::looks_like_webhook_secret(secret.reveal().text())) {
      throw command_error{"BANKWORKER_STRIPE_PLATFORM_SECRET_FILE does not hold a Stripe webhook signing secret (whsec_…)"};
    }
    return secret;
  } catch (const crypto::secret_file_error& error) {
    throw command_error{std::string("BANKWORKER_STRIPE_PLATFORM_SECRET_FILE: ") + error.what()};
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

}  // namespace

int run_service(settings& config) {
  logger log(config.level, 2, {&config.plaid_secret});
  {
    const http_settings defaults;
    constexpr rlim_t own_files_margin = 256;  // pool, listener, logs, libcurl, /proc reads
    const rlim_t wanted = defaults.connections_max + limits::db_connections_max + own_files_margin;
    const rlim_t open_files = raise_open_files_limit(wanted);
    if (open_files < wanted) {
      log.warn("the open file limit is below what the HTTP server's connection cap needs; raise LimitNOFILE",
               {{"open_files_max", static_cast<std::uint64_t>(open_files)}, {"wanted", static_cast<std::uint64_t>(wanted)}});
    }
  }
  std::optional<crypto::secret> platform_secret = read_platform_secret(config);
  check_schema(config);

  metrics_registry metrics;
  // Time a caller waited for a free pooled connection: near zero while the pool is big enough.
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
  // The LISTEN connection opens outside the pool: it gets the same connect timeout in its URL.
  const crypto::secret listen_url = [&config] {
    std::string url(config.database_url.reveal().text());
    db::add_connect_timeout(url, config.database_connect_timeout);
    crypto::secret copy = crypto::secret::copy_of(url);
    sodium_memzero(url.data(), url.size());
    return copy;
  }();
  db::pool connections(std::move(config.database_url), pool_config);
  const auto keys = open_key_store(config, connections);

  core::currency_table currencies;
  {
    auto lease = connections.checkout();
    pqxx::read_transaction tx(lease.connection());
    currencies = db::load_currencies(tx);
  }

  queue::queue_settings queue_config;
  queue_config.lease = config.job_lease;
  queue::job_queue jobs(connections, queue_config);
  asio::io_context io;
  asio::thread_pool blocking(pool_config.connections);
  metrics.add_counter_reader("bankworker_key_cache_hits_total",
                             "Tenant key lookups answered from the unwrapped key cache.", {},
                             [&keys] { return keys->cache().hits(); });
  metrics.add_counter_reader("bankworker_key_cache_misses_total",
                             "Tenant key lookups that had to unwrap the key with the root key.", {},
                             [&keys] { return keys->cache().misses(); });
  add_build_info(metrics, build_version(), build_commit());
  add_process_metrics(metrics);
  metrics.add_gauge("bankworker_process_resident_memory_bytes", "Resident memory of this process.", {},
                    process_resident_bytes);

  metrics.add_gauge("bankworker_db_pool_connections_in_use", "Database connections checked out of the pool.", {},
                    [&connections] { return static_cast<std::int64_t>(connections.in_use()); });
  metrics.add_gauge("bankworker_db_pool_connections", "Size of the database connection pool.", {},
                    [&pool_config] { return static_cast<std::int64_t>(pool_config.connections); });

  dispatcher_settings dispatch_config;
  dispatch_config.concurrency = config.concurrency;
  dispatch_config.drain_timeout = config.drain_timeout;
  // Heartbeats well inside the lease, so a live job never loses it to a slow round trip.
  dispatch_config.heartbeat_interval =
      std::min(dispatch_config.heartbeat_interval, std::chrono::duration_cast<std::chrono::milliseconds>(config.job_lease) / 3);
  // Retention runs once per interval across all processes, in the scheduler.
  dispatch_config.prune_interval = std::chrono::milliseconds(0);
  // Without Plaid settings a claimed Plaid job could only fail or wait, spending an attempt each
  // time; it stays in the queue instead.
  if (!plaid_configured(config)) {
    dispatch_config.never_claim_kinds = {std::string(plaid_link_kind), std::string(plaid_sync_kind),
                                         std::string(plaid_revoke_kind)};
  }
  dispatcher jobs_dispatcher(io, blocking, jobs, &listen_url, dispatch_config, log);
  jobs_dispatcher.set_metrics(metrics);
  db::inbox inbox(connections, {}, enqueue_stripe_posts());
  connectors::http::client http(io, {});

  // Stripe API (fees, missed-event recovery): only with BANKWORKER_STRIPE_API_BASE_URL; without
  // it events post gross only and no recovery runs.
  std::unique_ptr<stripe::api_client> stripe_api;
  std::unique_ptr<stripe_api_jobs> stripe_api_handlers;
  if (!config.stripe_api_base_url.empty()) {
    stripe::api_settings stripe_config;
    stripe_config.base_url = config.stripe_api_base_url;
    stripe_api = std::make_unique<stripe::api_client>(http, stripe_config);
    crypto::secret platform_key;
    if (config.stripe_api_key_file) {
      platform_key = crypto::read_secret_file(*config.stripe_api_key_file, crypto::file_permissions::owner_or_group_only);
    }
    stripe_api_handlers = std::make_unique<stripe_api_jobs>(connections, *keys, inbox, *stripe_api, currencies,
                                                            std::move(platform_key), log, stripe_api_job_settings{});
    stripe_api_handlers->set_metrics(metrics);
    jobs_dispatcher.add_handler(std::string(stripe_recover_kind), stripe_api_handlers->recover_handler());
  }
  jobs_dispatcher.add_handler(std::string(stripe_post_kind),
                              stripe_post_handler(connections, currencies, stripe_api_handlers.get(), &log));

  // Plaid: a process without its settings never claims Plaid jobs (dispatch_config above): they
  // wait, attempts untouched, for a process that has them or for this one restarted with them.
  std::unique_ptr<plaid::client> plaid_api;
  std::unique_ptr<plaid_jobs> plaid_handlers;
  if (plaid_configured(config)) {
    plaid::client_settings plaid_config;
    plaid_config.base_url = config.plaid_base_url;
    plaid_api = std::make_unique<plaid::client>(http, currencies, plaid_config,
                                                crypto::secret::copy_of(config.plaid_client_id),
                                                crypto::secret::copy_of(config.plaid_secret.reveal().text()));
    plaid_job_settings plaid_jobs_config;
    plaid_jobs_config.environment = plaid_environment(config.plaid_base_url);
    plaid_handlers = std::make_unique<plaid_jobs>(connections, *keys, *plaid_api, metrics, log, plaid_jobs_config);
    jobs_dispatcher.add_handler(std::string(plaid_link_kind), plaid_handlers->link_handler());
    jobs_dispatcher.add_handler(std::string(plaid_sync_kind), plaid_handlers->sync_handler());
    jobs_dispatcher.add_handler(std::string(plaid_revoke_kind), plaid_handlers->revoke_handler());
  } else {
    log.warn("Plaid is not configured (BANKWORKER_PLAID_BASE_URL, _CLIENT_ID, _SECRET): this process claims no"
             " Plaid job");
  }

  // Jobs, connections and the inbox from the database, every few seconds; every handled kind's
  // series exists from here on at zero.
  database_gauges database_counts(io, blocking, connections, metrics, log, jobs_dispatcher.kinds());

  scheduler_settings periodic_config;
  periodic_config.stripe_recovery = stripe_api_handlers != nullptr;
  periodic_config.stripe_platform_key = stripe_api_handlers != nullptr && stripe_api_handlers->has_platform_key();
  scheduler periodic(io, blocking, connections, jobs, periodic_config, log, &metrics);

  stripe_webhooks webhooks(connections, *keys, inbox, blocking, metrics, log, {});
  // A webhook secret added or removed anywhere (migration 0027) drops that tenant's cache entry
  // here within the notification's delivery; while the listen connection was down anything may
  // have changed, so every entry is dropped when it is back.
  jobs_dispatcher.listen_also({.channel = std::string(stripe_secret_channel),
                               .on_payload = [&webhooks](const std::string& tenant) { webhooks.forget_notified(tenant); },
                               .on_listening = [&webhooks] { webhooks.forget_secrets(); }});

  std::atomic<bool> draining{false};
  // The webhook port serves webhooks only; health, readiness and metrics are on the admin address.
  std::vector<http_route> routes;
  std::vector<http_route> admin_routes;
  admin_routes.push_back({"GET", "/healthz", false, [](http_request) -> asio::awaitable<http_response> {
                      co_return text(200, "ok\n");
                    }});
  const db::schema_check schema(db::embedded_migrations());
  readiness ready([&blocking, &connections, &schema] { return check_readiness(&blocking, &connections, &schema); },
                  limits::readyz_database_check_interval_ms);
  metrics.add_counter_reader("bankworker_readyz_database_checks_total",
                             "Database checks /readyz made (at most one per readyz_database_check_interval_ms).", {},
                             [&ready] { return ready.checks(); });
  admin_routes.push_back({"GET", "/readyz", false, [&](http_request) -> asio::awaitable<http_response> {
                      if (draining.load()) co_return text(503, "draining\n");
                      const std::string unready = co_await ready.unready_reason();
                      if (!unready.empty()) co_return text(503, unready + "\n");
                      co_return text(200, "ready\n");
                    }});
  admin_routes.push_back({"GET", "/metrics", false, [&metrics](http_request) -> asio::awaitable<http_response> {
                      co_return http_response{200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(), {}};
                    }});
  routes.push_back(webhooks.tenant_route());
  std::unique_ptr<plaid_webhooks> plaid_hooks;
  if (plaid_api) {
    const plaid::client* api = plaid_api.get();
    plaid_hooks = std::make_unique<plaid_webhooks>(
        connections, *keys, blocking, metrics, log,
        [api](std::string kid) { return fetch_plaid_key(api, std::move(kid)); }, plaid_webhook_settings{});
    routes.push_back(plaid_hooks->route());
    asio::co_spawn(io, plaid_hooks->run_key_refresh(), asio::detached);
  }
  if (platform_secret) {
    routes.push_back(webhooks.platform_route(std::move(*platform_secret)));
    log.info("Stripe Connect platform endpoint on: POST /webhooks/stripe");
  } else {
    log.info("Stripe Connect platform endpoint off (BANKWORKER_STRIPE_PLATFORM_SECRET_FILE not set): "
             "POST /webhooks/stripe answers 404");
  }

  // Handler latency per route, registered before the server starts so a request only reads the map.
  std::map<const http_route*, duration_histogram*> route_latency;
  duration_histogram& unrouted_latency = metrics.add_histogram(
      "bankworker_http_request_duration_seconds", "Time to answer an HTTP request, by route.", {{"route", "other"}});
  for (const auto* served : {&routes, &admin_routes}) {
    for (const http_route& route : *served) {
      route_latency[&route] = &metrics.add_histogram("bankworker_http_request_duration_seconds",
                                                     "Time to answer an HTTP request, by route.",
                                                     {{"route", route.method + " " + route.path}});
    }
  }
  // A webhook body the server refuses for its size is a webhook outcome of that provider too.
  std::map<const http_route*, metrics_registry::counter*> too_large_by_route;
  for (const http_route& route : routes) {
    for (const std::string_view provider : {"stripe", "plaid"}) {
      if (!route.path.starts_with("/webhooks/" + std::string(provider))) continue;
      too_large_by_route[&route] = &metrics.add_counter(webhook_requests_name, webhook_requests_help,
                                                        {{"provider", std::string(provider)}, {"outcome", "too_large"}});
    }
  }
  http_settings http_config;
  http_config.listen = config.http_listen;
  // The routes vector is moved into the server, which keeps its elements where they are, so the
  // pointers above stay valid for the server's life.
  http_config.observe_too_large = [&too_large_by_route](const http_route* route) {
    const auto refused = too_large_by_route.find(route);
    if (refused != too_large_by_route.end()) refused->second->fetch_add(1, std::memory_order_relaxed);
  };
  http_config.observe = [&route_latency, &unrouted_latency, &log](const http_route* route, unsigned status,
                                                                   std::chrono::microseconds elapsed) {
    const auto found = route != nullptr ? route_latency.find(route) : route_latency.end();
    (found != route_latency.end() ? *found->second : unrouted_latency).record_us(static_cast<std::uint64_t>(elapsed.count()));
    // The access log, at debug only: the route's pattern (never the tenant in the path), status, time.
    if (log.enabled(log_level::debug)) {
      log.debug("http request", {{"route", route != nullptr ? route->method + " " + route->path : std::string("other")},
                                 {"status", status},
                                 {"elapsed_us", static_cast<std::int64_t>(elapsed.count())}});
    }
  };
  http_config.body_bytes_max = limits::webhook_body_bytes_max;
  http_settings admin_config = http_config;
  admin_config.listen = config.admin_listen;
  admin_config.observe_too_large = nullptr;
  // Prometheus, a load balancer's health check and an operator: a few connections, no bodies.
  admin_config.connections_max = admin_connections_max;
  admin_config.body_bytes_max = admin_body_bytes_max;
  http_server server(io, http_config, std::move(routes));
  http_server admin_server(io, admin_config, std::move(admin_routes));
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
  server.start();
  admin_server.start();

  // Signals: the first drains, a second exits at once; SIGHUP reloads secrets and the log level
  // file, leaving every connection open.
  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  std::function<void(const boost::system::error_code&, int)> on_stop;
  on_stop = [&](const boost::system::error_code& error, int number) {
    if (error) return;
    if (draining.exchange(true)) {
      log.warn("second signal: exiting at once", {{"signal", number}});
      std::_Exit(1);
    }
    log.info("stopping: draining jobs", {{"signal", number}, {"drain_timeout_s", config.drain_timeout.count()}});
    sd_notify(0, "STOPPING=1");
    server.stop();
    admin_server.stop();
    periodic.stop();
    database_counts.stop();
    if (plaid_hooks) plaid_hooks->stop_key_refresh();
    jobs_dispatcher.stop();
    stop_signals.async_wait(on_stop);
  };
  stop_signals.async_wait(on_stop);
  asio::signal_set reload_signals(io, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_reload;
  on_reload = [&](const boost::system::error_code& error, int) {
    if (error) return;
    webhooks.forget_secrets();
    if (plaid_handlers) plaid_handlers->resume();
    reload_log_level(config, log);
    log.info("reloaded: webhook secrets will be read again", {{"log_level", to_string(log.level())}});
    reload_signals.async_wait(on_reload);
  };
  reload_signals.async_wait(on_reload);

  // The watchdog is fed from the event loop, and only while the database answers.
  std::uint64_t watchdog_usec = 0;
  asio::steady_timer watchdog(io);
  std::function<void()> feed;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    feed = [&] {
      watchdog.expires_after(std::chrono::microseconds(watchdog_usec / 2));
      watchdog.async_wait([&](const boost::system::error_code& error) {
        if (error) return;
        asio::co_spawn(io, [&]() -> asio::awaitable<void> {
          try {
            co_await queue::run_blocking(blocking, [&connections] {
              auto lease = connections.checkout();
              pqxx::nontransaction(lease.connection()).exec("SELECT 1");
            });
            sd_notify(0, "WATCHDOG=1");
          } catch (const std::exception&) {
            // No ping: systemd restarts a worker whose database stays unreachable past WatchdogSec.
          }
          feed();
        }, asio::detached);
      });
    };
    feed();
  }

  asio::co_spawn(periodic.executor(), periodic.run(), [&log](std::exception_ptr failure) {
    // run() handles each tick's failure itself; anything escaping is a bug, so it is not hidden.
    if (failure) log.error("the scheduler stopped unexpectedly; periodic syncs and maintenance wait");
  });
  asio::co_spawn(database_counts.executor(), database_counts.run(), [&log](std::exception_ptr failure) {
    // run() handles each refresh's failure itself; anything escaping is a bug.
    if (failure) log.error("the database gauges stopped unexpectedly; they keep their last values");
  });
  bool clean = false;
  asio::co_spawn(jobs_dispatcher.executor(), jobs_dispatcher.run(), [&](std::exception_ptr failure) {
    clean = failure == nullptr;
    http.shutdown();
    periodic.stop();
    database_counts.stop();
    if (plaid_hooks) plaid_hooks->stop_key_refresh();
    server.stop();
    admin_server.stop();
    stop_signals.cancel();
    reload_signals.cancel();
    watchdog.cancel();
    io.stop();
  });
  log.info("bankworker running", {{"listen", config.http_listen.host + ":" + std::to_string(server.port())},
                                  {"admin_listen", config.admin_listen.host + ":" + std::to_string(admin_server.port())},
                                  {"concurrency", config.concurrency},
                                  {"version", build_version()},
                                  {"commit", build_commit()}});
  sd_notify(0, "READY=1");

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& thread : threads) thread.join();
  blocking.join();
  log.info("bankworker stopped", {{"clean", clean}});
  return clean ? 0 : 1;
}

}  // namespace bankworker::worker
