#include "connectors/stripe/webhooks.hpp"

#include <simdjson.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/thin_event.hpp"
#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "db/tenant_scope.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::stripe {

using service::logger;
using service::metrics_registry;
using service::settings;
using service::webhook_requests_name;
using service::webhook_requests_help;

namespace asio = boost::asio;

namespace {

constexpr std::string_view tenant_prefix = "/webhooks/stripe/";
// How often a request waiting for another's load of the same tenant's secrets looks again.
constexpr std::chrono::milliseconds load_poll{2};
constexpr std::string_view platform_path = "/webhooks/stripe";
constexpr std::array<std::string_view, 11> outcome_names = {"stored",      "unrouted",       "duplicate", "bad_signature",
                                                            "stale",       "malformed",      "unknown_tenant",
                                                            "rejected",    "unavailable",    "too_large",
                                                            "over_budget"};

http_response reply(unsigned status, std::string_view text) {
  return http_response{status, "application/json", "{\"message\":\"" + std::string(text) + "\"}\n", {}};
}

// The envelope fields the inbox stores, with `body` moved in (a 2 KB event is not copied on the
// way to the inbox); nothing when the body is not a Stripe event.
std::optional<stripe::inbox_event> read_envelope(std::string body) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element event;
  if (parser.parse(body.data(), body.size()).get(event) != simdjson::SUCCESS) return std::nullopt;
  stripe::inbox_event e;
  std::string_view text;
  if (event["id"].get(text) != simdjson::SUCCESS || text.empty() || text.size() > stripe::stripe_id_bytes_max) {
    return std::nullopt;
  }
  e.event_id = std::string(text);
  if (event["type"].get(text) != simdjson::SUCCESS || text.empty() || text.size() > stripe::stripe_id_bytes_max) {
    return std::nullopt;
  }
  e.type = std::string(text);
  // A snapshot event's `created` is seconds since the epoch; a thin event's is an RFC 3339 time.
  if (event["created"].get(e.created_s) != simdjson::SUCCESS) {
    if (event["created"].get(text) != simdjson::SUCCESS) return std::nullopt;
    const std::optional<std::int64_t> created = stripe::parse_rfc3339_s(text);
    if (!created) return std::nullopt;
    e.created_s = *created;
  }
  bool livemode = false;
  if (event["livemode"].get(livemode) == simdjson::SUCCESS) e.livemode = livemode;
  if (event["account"].get(text) == simdjson::SUCCESS && !text.empty()) e.account = std::string(text);
  e.posting_lane = stripe::posting_lane_of(stripe::money_object_of(event));
  e.body = std::move(body);
  return e;
}

}  // namespace

stripe_webhooks::stripe_webhooks(db::pool& connections, db::key_store& keys, stripe::inbox& inbox,
                                 asio::thread_pool& blocking, metrics_registry& metrics, logger& log,
                                 stripe_webhook_settings settings)
    : connections_(connections),
      keys_(keys),
      inbox_(inbox),
      blocking_(blocking),
      log_(log),
      settings_(settings),
      cache_(settings.cache),
      lookups_(settings.lookups),
      loads_(metrics.add_counter("bankworker_stripe_secret_loads_total",
                                 "Database lookups of a tenant's Stripe webhook secrets (cache misses).")) {
  for (const std::string_view name : outcome_names) {
    outcomes_.emplace(name, &metrics.add_counter(webhook_requests_name,
                                                 webhook_requests_help,
                                                 {{"provider", "stripe"}, {"outcome", std::string(name)}}));
  }
  constexpr std::string_view cached_name = "bankworker_stripe_secret_cache_tenants";
  constexpr std::string_view cached_help = "Tenants in the webhook secret cache: with secrets, or known to have none.";
  metrics.add_gauge(cached_name, cached_help, {{"kind", "secrets"}},
                    [this] { return static_cast<std::int64_t>(cache_.tenants()); });
  metrics.add_gauge(cached_name, cached_help, {{"kind", "unknown"}},
                    [this] { return static_cast<std::int64_t>(cache_.unknown_tenants()); });
}

metrics_registry::counter& stripe_webhooks::outcome(std::string_view name) { return *outcomes_.find(name)->second; }

http_route stripe_webhooks::tenant_route() {
  return {"POST", std::string(tenant_prefix), true,
          [this](http_request request) { return handle(std::move(request)); }};
}

http_route stripe_webhooks::platform_route(crypto::secret platform_secret) {
  BW_ASSERT(platform_secrets_.empty());
  platform_secrets_.push_back(std::move(platform_secret));
  return {"POST", std::string(platform_path), false,
          [this](http_request request) { return handle_platform(std::move(request)); }};
}

void stripe_webhooks::forget_secrets() { cache_.forget_all(); }

void stripe_webhooks::forget_tenant(const core::uuid& tenant) { cache_.forget(tenant); }

void stripe_webhooks::forget_notified(std::string_view payload) {
  if (const auto tenant = core::uuid::parse(payload)) {
    cache_.forget(*tenant);
  } else {
    cache_.forget_all();
  }
}

asio::awaitable<std::optional<webhook_secret_cache::lookup>> stripe_webhooks::load_secrets(core::uuid tenant,
                                                                                           std::uint64_t generation) {
  loads_.fetch_add(1, std::memory_order_relaxed);
  try {
    webhook_secrets loaded = co_await queue::run_blocking(blocking_, [this, tenant] {
      return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> webhook_secrets {
        if (!stripe::tenant_exists(tx)) return nullptr;
        return std::make_shared<const std::vector<crypto::secret>>(stripe::load_webhook_secrets(tx, keys_, tenant));
      });
    });
    cache_.store(tenant, loaded, generation, std::chrono::steady_clock::now());
    webhook_secret_cache::lookup result;
    result.found = loaded && !loaded->empty() ? webhook_secret_cache::state::found : webhook_secret_cache::state::unknown;
    result.secrets = std::move(loaded);
    co_return result;
  } catch (const std::exception& error) {
    // The database is away (or a key cannot be opened): the sender retries later.
    log_.warn("webhook secrets unavailable", {{"tenant", tenant.to_string()}, {"reason", error.what()}});
    co_return std::nullopt;
  }
}

// Nothing when the sender's budget is spent; a lookup whose `found` is still `miss` when the
// database could not be asked (or another request's load did not finish in time).
asio::awaitable<std::optional<webhook_secret_cache::lookup>> stripe_webhooks::load_once(core::uuid tenant,
                                                                                       std::string_view source) {
  const std::string key = tenant.to_string();
  bool loader = false;
  {
    std::lock_guard lock(loading_mutex_);
    loader = loading_.insert(key).second;
  }
  if (!loader) {
    // Another request loads this tenant: wait for it (a few milliseconds a round, bounded), then
    // read what it cached. Waiting spends no budget and sends no query.
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (std::chrono::milliseconds waited{0}; waited < limits::webhook_secret_load_wait_ms; waited += load_poll) {
      timer.expires_after(load_poll);
      co_await timer.async_wait(asio::use_awaitable);
      std::lock_guard lock(loading_mutex_);
      if (!loading_.contains(key)) break;
    }
    co_return cache_.find(tenant, std::chrono::steady_clock::now());
  }
  struct done_loading {
    stripe_webhooks& self;
    const std::string& key;
    ~done_loading() {
      std::lock_guard lock(self.loading_mutex_);
      self.loading_.erase(key);
    }
  } done{*this, key};
  // A load that finished between the caller's miss and this request becoming the loader has
  // cached the tenant already (its store happens before its loading_ entry goes): use it.
  webhook_secret_cache::lookup cached = cache_.find(tenant, std::chrono::steady_clock::now());
  if (cached.found != webhook_secret_cache::state::miss) co_return cached;
  if (!lookups_.try_take(source, std::chrono::steady_clock::now())) co_return std::nullopt;
  auto loaded = co_await load_secrets(tenant, cached.generation);
  if (!loaded) co_return webhook_secret_cache::lookup{};
  co_return loaded;
}

asio::awaitable<http_response> stripe_webhooks::handle(http_request request) {
  const auto tenant = core::uuid::parse(std::string_view(request.path).substr(tenant_prefix.size()));
  if (!tenant) {
    outcome("unknown_tenant").fetch_add(1, std::memory_order_relaxed);
    co_return reply(404, "unknown tenant");
  }
  // What needs no secret is checked before any cache or database work: a header no secret can
  // verify, or a timestamp outside the window, costs nothing but this.
  const stripe::signature_check shape = stripe::precheck_signature(
      request.header("stripe-signature"), std::chrono::system_clock::now(), settings_.signature);
  if (shape.status != stripe::signature_status::verified) {
    const bool stale = shape.status == stripe::signature_status::timestamp_outside_tolerance;
    outcome(stale ? "stale" : "bad_signature").fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, stale ? "timestamp outside the tolerance" : "no valid signature");
  }
  webhook_secret_cache::lookup secrets = cache_.find(*tenant, std::chrono::steady_clock::now());
  if (secrets.found == webhook_secret_cache::state::miss) {
    auto loaded = co_await load_once(*tenant, request.remote_address);
    if (!loaded) {
      outcome("over_budget").fetch_add(1, std::memory_order_relaxed);
      http_response refused = reply(429, "too many lookups of uncached tenants (lookups per_source_max)");
      refused.headers.emplace_back("Retry-After", std::to_string(settings_.lookups.window.count()));
      co_return refused;
    }
    if (loaded->found == webhook_secret_cache::state::miss) {
      outcome("unavailable").fetch_add(1, std::memory_order_relaxed);
      co_return reply(503, "temporarily unavailable");
    }
    secrets = std::move(*loaded);
  }
  if (secrets.found != webhook_secret_cache::state::found) {
    outcome("unknown_tenant").fetch_add(1, std::memory_order_relaxed);
    co_return reply(404, "unknown tenant or no webhook endpoint");
  }
  co_return co_await verify_and_store(std::move(request), *secrets.secrets, *tenant);
}

asio::awaitable<http_response> stripe_webhooks::handle_platform(http_request request) {
  // The platform secret never changes while serving: no database is needed before storing.
  co_return co_await verify_and_store(std::move(request), platform_secrets_, std::nullopt);
}

asio::awaitable<http_response> stripe_webhooks::verify_and_store(http_request request,
                                                                 std::span<const crypto::secret> secrets,
                                                                 std::optional<core::uuid> tenant) {
  // Nothing is read from the body before its signature is checked.
  const stripe::signature_check check = stripe::verify_signature(request.header("stripe-signature"), request.body,
                                                                 secrets, std::chrono::system_clock::now(),
                                                                 settings_.signature);
  if (check.status != stripe::signature_status::verified) {
    const bool stale = check.status == stripe::signature_status::timestamp_outside_tolerance;
    outcome(stale ? "stale" : "bad_signature").fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, stale ? "timestamp outside the tolerance" : "no valid signature");
  }
  std::optional<stripe::inbox_event> event = read_envelope(std::move(request.body));
  if (!event) {
    outcome("malformed").fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, "not a Stripe event");
  }
  event->tenant = tenant;
  switch (co_await inbox_.store(std::move(*event))) {
    case stripe::inbox_outcome::stored:
      outcome("stored").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "stored");
    case stripe::inbox_outcome::unrouted:
      outcome("unrouted").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "stored; no tenant has connected this account yet");
    case stripe::inbox_outcome::duplicate:
      outcome("duplicate").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "duplicate");
    case stripe::inbox_outcome::rejected:
      outcome("rejected").fetch_add(1, std::memory_order_relaxed);
      co_return reply(400, "event content refused");
    case stripe::inbox_outcome::unavailable:
      break;
  }
  outcome("unavailable").fetch_add(1, std::memory_order_relaxed);
  co_return reply(503, "temporarily unavailable");
}

void enqueue_stripe_posts(pqxx::work& tx, const core::uuid& tenant, std::span<const std::string_view> event_ids) {
  std::vector<queue::new_job> jobs;
  jobs.reserve(event_ids.size());
  for (const std::string_view event_id : event_ids) {
    queue::new_job job;
    job.tenant = tenant;
    job.kind = std::string(stripe_post_kind);
    std::string payload = "{\"event_id\":";
    core::append_json_string(event_id, payload);
    job.payload_json = payload + "}";
    job.priority = queue::priority::webhook;
    jobs.push_back(std::move(job));
  }
  queue::enqueue(tx, jobs);
}

stripe::inbox_hook enqueue_stripe_posts() {
  return [](pqxx::work& tx, const core::uuid& tenant, std::span<const stripe::inbox_event* const> stored) {
    std::vector<std::string_view> ids;
    ids.reserve(stored.size());
    for (const stripe::inbox_event* event : stored) ids.push_back(event->event_id);
    enqueue_stripe_posts(tx, tenant, ids);
  };
}

}  // namespace bankworker::stripe
