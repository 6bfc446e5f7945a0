#include "connectors/plaid/webhooks.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "connectors/plaid/webhook_store.hpp"
#include "db/tenant_scope.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::plaid {

using service::logger;
using service::metrics_registry;
using service::webhook_replays;
using service::webhook_requests_name;
using service::webhook_requests_help;

namespace asio = boost::asio;

enum class plaid_webhook_effect { ignore, sync, needs_reauth, revoke };

struct plaid_webhook_fields {
  plaid_webhook_effect effect = plaid_webhook_effect::ignore;
  std::string item_id;
  std::string error_code;  // set for needs_reauth (ITEM_LOGIN_REQUIRED or ITEM_LOCKED)
};

namespace {

constexpr std::array<std::string_view, 20> outcome_names = {
    "sync_requested", "reauth_marked",   "revoke_requested", "no_change",       "unknown_item",  "ignored",
    "malformed",      "alg_not_allowed", "unknown_kid",      "key_expired",     "key_invalid",   "bad_signature",
    "stale",          "body_mismatch",   "malformed_body",   "too_large",       "key_unavailable", "unavailable",
    "replayed",       "replays_full"};
// Plaid's item ids are 37 characters; the column allows 256.
constexpr std::size_t item_id_bytes_max = 256;

http_response reply(unsigned status, std::string_view text) {
  return http_response{status, "application/json", "{\"message\":\"" + std::string(text) + "\"}\n", {}};
}

// What a verified body asks for; nothing when it is not a Plaid webhook (or names no item where
// its effect needs one).
std::optional<plaid_webhook_fields> read_webhook(std::string_view body) {
  thread_local simdjson::dom::parser parser(limits::plaid_webhook_body_bytes_max);
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::object webhook;
  if (root.get_object().get(webhook) != simdjson::SUCCESS) return std::nullopt;
  std::string_view type;
  std::string_view code;
  if (webhook["webhook_type"].get(type) != simdjson::SUCCESS) return std::nullopt;
  if (webhook["webhook_code"].get(code) != simdjson::SUCCESS) return std::nullopt;
  std::string_view error_code;
  const auto error = webhook["error"];
  if (error.error() == simdjson::SUCCESS && !error.is_null() && error["error_code"].get(error_code) != simdjson::SUCCESS) {
    return std::nullopt;
  }

  plaid_webhook_fields fields;
  if (type == "TRANSACTIONS" && code == "SYNC_UPDATES_AVAILABLE") {
    fields.effect = plaid_webhook_effect::sync;
  } else if (type == "ITEM" && code == "USER_PERMISSION_REVOKED") {
    fields.effect = plaid_webhook_effect::revoke;
  } else if (type == "ITEM" && code == "ERROR") {
    if (error_code == "ITEM_LOGIN_REQUIRED" || error_code == "ITEM_LOCKED") {
      fields.effect = plaid_webhook_effect::needs_reauth;
      fields.error_code = std::string(error_code);
    } else if (error_code == "USER_PERMISSION_REVOKED" || error_code == "ITEM_NOT_FOUND") {
      fields.effect = plaid_webhook_effect::revoke;
    }
  }
  if (fields.effect == plaid_webhook_effect::ignore) return fields;
  std::string_view item_id;
  if (webhook["item_id"].get(item_id) != simdjson::SUCCESS) return std::nullopt;
  if (item_id.empty() || item_id.size() > item_id_bytes_max) return std::nullopt;
  fields.item_id = std::string(item_id);
  return fields;
}

std::string_view effect_outcome(plaid_webhook_effect effect) {
  switch (effect) {
    case plaid_webhook_effect::sync: return "sync_requested";
    case plaid_webhook_effect::needs_reauth: return "reauth_marked";
    case plaid_webhook_effect::revoke: return "revoke_requested";
    case plaid_webhook_effect::ignore: break;
  }
  return "ignored";
}

}  // namespace

plaid_webhooks::plaid_webhooks(db::pool& connections, const db::key_store& keys, asio::thread_pool& blocking,
                               metrics_registry& metrics, logger& log, verification_key_fetcher fetch_key,
                               plaid_webhook_settings settings)
    : connections_(connections),
      keys_(keys),
      blocking_(blocking),
      log_(log),
      fetch_key_(std::move(fetch_key)),
      settings_(std::move(settings)),
      fetch_budget_({.per_source_max = settings_.key_fetches_max,
                     .total_max = settings_.key_fetches_total_max,
                     .window = settings_.key_fetch_window}),
      replays_(std::min(settings_.verify.max_age, limits::plaid_webhook_age_max) +
               std::min(settings_.verify.future_skew, limits::plaid_webhook_future_skew_max)) {
  for (const std::string_view name : outcome_names) {
    outcomes_.emplace(name, &metrics.add_counter(webhook_requests_name,
                                                 webhook_requests_help,
                                                 {{"provider", "plaid"}, {"outcome", std::string(name)}}));
  }
}

metrics_registry::counter& plaid_webhooks::outcome(std::string_view name) { return *outcomes_.find(name)->second; }

http_route plaid_webhooks::route() {
  return {"POST", std::string(plaid_webhook_path), false,
          [this](http_request request) { return handle(std::move(request)); }};
}

plaid_webhooks::fetch_permission plaid_webhooks::may_fetch(const std::string& kid, std::string_view source,
                                                           std::chrono::steady_clock::time_point now,
                                                           std::optional<plaid::verification_key>& cached) {
  std::lock_guard lock(cache_mutex_);
  auto it = cache_.find(kid);
  if (it != cache_.end()) {
    cached_key& entry = it->second;
    if (entry.key) {
      // A known key is used as cached; the schedule (refresh_keys) fetches it again.
      cached = entry.key;
      return fetch_permission::use_cached;
    }
    if (entry.fetching) return fetch_permission::busy;
    if (now - entry.fetched_at < settings_.unknown_kid_retry) return fetch_permission::unknown;
  }
  // A kid we hold no key for: the sender's budget applies.
  if (!fetch_budget_.try_take(source, now)) return fetch_permission::busy;
  if (it == cache_.end()) {
    const std::size_t keys_max = std::clamp<std::size_t>(settings_.keys_max, 1, limits::plaid_webhook_keys_max);
    if (cache_.size() >= keys_max && !evict_one_locked()) return fetch_permission::busy;
    it = cache_.emplace(kid, cached_key{}).first;
  }
  it->second.fetching = true;
  it->second.fetched_at = now;
  return fetch_permission::fetch;
}

// Evicts an idle entry, an unknown kid before any key, the oldest first; false when all are busy.
bool plaid_webhooks::evict_one_locked() {
  auto victim = cache_.end();
  for (auto candidate = cache_.begin(); candidate != cache_.end(); ++candidate) {
    if (candidate->second.fetching) continue;
    if (victim == cache_.end()) {
      victim = candidate;
      continue;
    }
    const bool candidate_unknown = !candidate->second.key;
    const bool victim_unknown = !victim->second.key;
    if (candidate_unknown != victim_unknown) {
      if (candidate_unknown) victim = candidate;
    } else if (candidate->second.fetched_at < victim->second.fetched_at) {
      victim = candidate;
    }
  }
  if (victim == cache_.end()) return false;
  cache_.erase(victim);
  return true;
}

void plaid_webhooks::remember(const std::string& kid, std::optional<plaid::verification_key> key,
                              std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(cache_mutex_);
  const auto it = cache_.find(kid);
  if (it == cache_.end()) return;
  it->second.key = std::move(key);
  it->second.fetched_at = now;
  it->second.fetching = false;
}

void plaid_webhooks::forget(const std::string& kid, bool fetched_by_caller) {
  std::lock_guard lock(cache_mutex_);
  const auto it = cache_.find(kid);
  if (it != cache_.end() && (fetched_by_caller || !it->second.fetching)) cache_.erase(it);
}

asio::awaitable<plaid_webhooks::key_lookup> plaid_webhooks::key_for(std::string kid, std::string source) {
  const auto now = std::chrono::steady_clock::now();
  key_lookup result;
  std::optional<plaid::verification_key> cached;
  switch (may_fetch(kid, source, now, cached)) {
    case fetch_permission::use_cached:
      result.status = key_lookup_status::found;
      result.key = std::move(cached);
      co_return result;
    case fetch_permission::unknown:
      result.status = key_lookup_status::unknown;
      co_return result;
    case fetch_permission::busy:
      log_.debug("plaid webhook key fetch refused",
                 {{"kid", kid}, {"reason", "key_fetches_max, key_fetches_total_max or a fetch in flight"}});
      co_return result;
    case fetch_permission::fetch:
      break;
  }
  std::optional<plaid::verification_key> fetched;
  try {
    fetched = co_await fetch_key_(kid);
  } catch (const std::exception& error) {
    log_.warn("plaid webhook key fetch failed", {{"kid", kid}, {"reason", error.what()}});
    forget(kid, true);
    co_return result;
  }
  // A key answered for another kid is no key for this one.
  if (fetched && fetched->kid != kid) fetched.reset();
  remember(kid, fetched, std::chrono::steady_clock::now());
  result.status = fetched ? key_lookup_status::found : key_lookup_status::unknown;
  result.key = std::move(fetched);
  co_return result;
}

asio::awaitable<void> plaid_webhooks::refresh_keys() {
  std::vector<std::string> kids;
  {
    std::lock_guard lock(cache_mutex_);
    for (auto& [kid, entry] : cache_) {
      if (!entry.key || entry.fetching) continue;
      entry.fetching = true;
      kids.push_back(kid);
    }
  }
  // At most keys_max fetches a round, one at a time.
  for (const std::string& kid : kids) {
    std::optional<plaid::verification_key> fetched;
    try {
      fetched = co_await fetch_key_(kid);
    } catch (const std::exception& error) {
      // Keep verifying with the key we have; the next round asks again.
      log_.warn("plaid webhook key refresh failed", {{"kid", kid}, {"reason", error.what()}});
      std::lock_guard lock(cache_mutex_);
      if (const auto it = cache_.find(kid); it != cache_.end()) it->second.fetching = false;
      continue;
    }
    if (fetched && fetched->kid != kid) fetched.reset();
    // Plaid no longer knowing a kid means its key is gone: it is remembered as unknown.
    remember(kid, std::move(fetched), std::chrono::steady_clock::now());
  }
}

asio::awaitable<void> plaid_webhooks::run_key_refresh() {
  {
    std::lock_guard lock(refresh_mutex_);
    if (refresh_stopping_) co_return;
    refresh_timer_ = std::make_unique<asio::steady_timer>(co_await asio::this_coro::executor);
  }
  while (true) {
    refresh_timer_->expires_after(settings_.key_ttl);
    boost::system::error_code cancelled;
    co_await refresh_timer_->async_wait(asio::redirect_error(asio::use_awaitable, cancelled));
    {
      std::lock_guard lock(refresh_mutex_);
      if (refresh_stopping_) break;
    }
    co_await refresh_keys();
  }
}

void plaid_webhooks::stop_key_refresh() {
  std::lock_guard lock(refresh_mutex_);
  refresh_stopping_ = true;
  if (refresh_timer_) asio::post(refresh_timer_->get_executor(), [timer = refresh_timer_.get()] { timer->cancel(); });
}

asio::awaitable<http_response> plaid_webhooks::handle(http_request request) {
  if (request.body.size() > limits::plaid_webhook_body_bytes_max) {
    outcome("too_large").fetch_add(1, std::memory_order_relaxed);
    co_return reply(413, "body over plaid_webhook_body_bytes_max");
  }
  // Nothing is read from the body before its signature is checked; the token's header is read
  // first only to name the key, and any alg but ES256 ends here.
  const std::string token(request.header("plaid-verification"));
  const plaid::webhook_kid kid = plaid::read_webhook_kid(token);
  if (kid.status != plaid::webhook_verdict::verified) {
    outcome(plaid::to_string(kid.status)).fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, plaid::to_string(kid.status));
  }
  const key_lookup key = co_await key_for(kid.kid, request.remote_address);
  if (key.status == key_lookup_status::unavailable) {
    outcome("key_unavailable").fetch_add(1, std::memory_order_relaxed);
    co_return reply(503, "verification key temporarily unavailable");
  }
  const plaid::webhook_verdict verdict =
      plaid::verify_webhook(token, request.body, key.key, settings_.now(), settings_.verify);
  if (verdict != plaid::webhook_verdict::verified) {
    if (verdict == plaid::webhook_verdict::key_invalid) forget(kid.kid, false);
    outcome(plaid::to_string(verdict)).fetch_add(1, std::memory_order_relaxed);
    log_.info("plaid webhook refused", {{"kid", kid.kid}, {"reason", plaid::to_string(verdict)}});
    co_return reply(400, plaid::to_string(verdict));
  }
  switch (replays_.admit(token, std::chrono::steady_clock::now())) {
    case webhook_replays::admission::first:
      break;
    case webhook_replays::admission::replay:
      outcome("replayed").fetch_add(1, std::memory_order_relaxed);
      log_.info("plaid webhook refused", {{"kid", kid.kid}, {"reason", "replayed"}});
      co_return reply(409, "replayed: this webhook was already accepted");
    case webhook_replays::admission::full:
      outcome("replays_full").fetch_add(1, std::memory_order_relaxed);
      co_return reply(503, "too many recent webhooks to remember (plaid_webhook_replays_max)");
  }

  const std::optional<plaid_webhook_fields> webhook = read_webhook(request.body);
  if (!webhook) {
    outcome("malformed_body").fetch_add(1, std::memory_order_relaxed);
    co_return reply(400, "not a Plaid webhook");
  }
  if (webhook->effect == plaid_webhook_effect::ignore) {
    outcome("ignored").fetch_add(1, std::memory_order_relaxed);
    co_return reply(200, "ignored");
  }

  co_return co_await apply_effect(*webhook, std::move(token));
}

asio::awaitable<http_response> plaid_webhooks::apply_effect(plaid_webhook_fields webhook, std::string token) {
  struct applied {
    std::size_t connections = 0;
    std::size_t changed = 0;
  };
  applied done;
  try {
    done = co_await queue::run_blocking(blocking_, [this, &webhook] {
      applied result;
      std::vector<plaid::item_connection> found;
      {
        db::pool::lease lease = connections_.checkout();
        try {
          pqxx::read_transaction tx(lease.connection(), "bankworker_plaid_item");
          found = plaid::find_item_connections(tx, webhook.item_id);
          tx.commit();
        } catch (const pqxx::broken_connection&) {
          lease.discard();
          throw;
        }
      }
      result.connections = found.size();
      for (const plaid::item_connection& target : found) {
        const bool changed = db::with_tenant(connections_, target.tenant, [&](pqxx::work& tx) {
          switch (webhook.effect) {
            case plaid_webhook_effect::sync: return plaid::request_connection_sync(tx, target.tenant, target.connection);
            case plaid_webhook_effect::needs_reauth:
              return plaid::mark_connection_needs_reauth(tx, keys_, target.tenant, target.connection,
                                                      webhook.error_code);
            case plaid_webhook_effect::revoke: return plaid::request_connection_revoke(tx, target.tenant, target.connection);
            case plaid_webhook_effect::ignore: break;
          }
          return false;
        });
        if (changed) ++result.changed;
      }
      return result;
    });
  } catch (const std::exception& error) {
    // The database is away (or the commit is in doubt): the effects are idempotent, so the
    // sender's retry is safe.
    log_.warn("plaid webhook effect not applied", {{"item_id", webhook.item_id}, {"reason", error.what()}});
    replays_.release(token);  // not accepted: the same delivery may come again
    outcome("unavailable").fetch_add(1, std::memory_order_relaxed);
    co_return reply(503, "temporarily unavailable");
  }
  if (done.connections == 0) {
    outcome("unknown_item").fetch_add(1, std::memory_order_relaxed);
    log_.info("plaid webhook for an unknown item", {{"item_id", webhook.item_id}});
    co_return reply(200, "unknown item");
  }
  const std::string_view result = done.changed > 0 ? effect_outcome(webhook.effect) : "no_change";
  outcome(result).fetch_add(1, std::memory_order_relaxed);
  log_.info("plaid webhook applied",
            {{"item_id", webhook.item_id}, {"outcome", result}, {"connections", done.connections}});
  co_return reply(200, result);
}

}  // namespace bankworker::plaid
