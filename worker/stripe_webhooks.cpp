#include "worker/stripe_webhooks.hpp"

#include <simdjson.h>

#include "connectors/stripe/thin_event.hpp"
#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "db/stripe_store.hpp"
#include "db/tenant_scope.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::worker {

namespace asio = boost::asio;

namespace {

constexpr std::string_view tenant_prefix = "/webhooks/stripe/";
constexpr std::string_view platform_path = "/webhooks/stripe";
constexpr std::array<std::string_view, 10> outcome_names = {"stored",      "unrouted",       "duplicate", "bad_signature",
                                                            "stale",       "malformed",      "unknown_tenant",
                                                            "rejected",    "unavailable",    "too_large"};

http_response reply(unsigned status, std::string_view text) {
  return http_response{status, "application/json", "{\"message\":\"" + std::string(text) + "\"}\n", {}};
}

// The envelope fields the inbox stores, with `body` moved in (a 2 KB event is not copied on the
// way to the inbox); nothing when the body is not a Stripe event.
std::optional<db::inbox_event> read_envelope(std::string body) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element event;
  if (parser.parse(body.data(), body.size()).get(event) != simdjson::SUCCESS) return std::nullopt;
  db::inbox_event e;
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
  e.body = std::move(body);
  return e;
}

}  // namespace

stripe_webhooks::stripe_webhooks(db::pool& connections, db::key_store& keys, db::inbox& inbox,
                                 asio::thread_pool& blocking, metrics_registry& metrics, logger& log,
                                 stripe_webhook_settings settings)
    : connections_(connections), keys_(keys), inbox_(inbox), blocking_(blocking), log_(log), settings_(settings) {
  for (const std::string_view name : outcome_names) {
    outcomes_.emplace(name, &metrics.add_counter("bankworker_webhook_requests_total",
                                                 "Stripe webhook requests by outcome.",
                                                 {{"provider", "stripe"}, {"outcome", std::string(name)}}));
  }
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

void stripe_webhooks::forget_secrets() {
  std::lock_guard lock(cache_mutex_);
  cache_.clear();
}

asio::awaitable<std::optional<stripe_webhooks::cached_secrets>> stripe_webhooks::secrets_for(core::uuid tenant) {
  const std::string key = tenant.to_string();
  {
    std::lock_guard lock(cache_mutex_);
    const auto it = cache_.find(key);
    if (it != cache_.end() && std::chrono::steady_clock::now() - it->second.loaded_at < settings_.secrets_ttl) {
      co_return it->second;
    }
  }
  try {
    cached_secrets loaded = co_await queue::run_blocking(blocking_, [this, tenant] {
      return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        cached_secrets result;
        result.loaded_at = std::chrono::steady_clock::now();
        result.tenant_found = db::tenant_exists(tx);
        result.secrets = std::make_shared<const std::vector<crypto::secret>>(
            result.tenant_found ? db::load_webhook_secrets(tx, keys_, tenant) : std::vector<crypto::secret>{});
        return result;
      });
    });
    std::lock_guard lock(cache_mutex_);
    cache_[key] = loaded;
    co_return loaded;
  } catch (const std::exception& error) {
    // The database is away (or a key cannot be opened): the sender retries later.
    log_.warn("webhook secrets unavailable", {{"tenant", key}, {"reason", error.what()}});
    co_return std::nullopt;
  }
}

asio::awaitable<http_response> stripe_webhooks::handle(http_request request) {
  const auto tenant = core::uuid::parse(std::string_view(request.path).substr(tenant_prefix.size()));
  if (!tenant) {
    outcome("unknown_tenant").fetch_add(1, std::memory_order_relaxed);
    co_return reply(404, "unknown tenant");
  }
  const auto secrets = co_await secrets_for(*tenant);
  if (!secrets) {
    outcome("unavailable").fetch_add(1, std::memory_order_relaxed);
    co_return reply(503, "temporarily unavailable");
  }
  if (!secrets->tenant_found || secrets->secrets->empty()) {
    outcome("unknown_tenant").fetch_add(1, std::memory_order_relaxed);
    co_return reply(404, "unknown tenant or no webhook endpoint");
  }
  co_return co_await verify_and_store(std::move(request), *secrets->secrets, *tenant);
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
  std::optional<db::inbox_event> event = read_envelope(std::move(request.body));
  if (!event) {
    outcome("malformed").fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, "not a Stripe event");
  }
  event->tenant = tenant;
  switch (co_await inbox_.store(std::move(*event))) {
    case db::inbox_outcome::stored:
      outcome("stored").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "stored");
    case db::inbox_outcome::unrouted:
      outcome("unrouted").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "stored; no tenant has connected this account yet");
    case db::inbox_outcome::duplicate:
      outcome("duplicate").fetch_add(1, std::memory_order_relaxed);
      co_return reply(200, "duplicate");
    case db::inbox_outcome::rejected:
      outcome("rejected").fetch_add(1, std::memory_order_relaxed);
      co_return reply(400, "event content refused");
    case db::inbox_outcome::unavailable:
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

db::inbox_hook enqueue_stripe_posts() {
  return [](pqxx::work& tx, const core::uuid& tenant, std::span<const db::inbox_event* const> stored) {
    std::vector<std::string_view> ids;
    ids.reserve(stored.size());
    for (const db::inbox_event* event : stored) ids.push_back(event->event_id);
    enqueue_stripe_posts(tx, tenant, ids);
  };
}

}  // namespace bankworker::worker
