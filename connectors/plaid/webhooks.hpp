#pragma once
// POST /webhooks/plaid (DESIGN.md §1.1, §1.4, §6; issue #5).
//
// Nothing in the body is read before the Plaid-Verification JWT has verified
// (connectors/plaid/webhook_verify.hpp): the kid is read from the token's header (alg must be
// ES256 before any key is looked up), the key comes from a bounded cache fed by an injected
// fetcher, then the signature, age and body hash are checked. Only a verified body is parsed, and
// only then is the database touched:
//
//   TRANSACTIONS / SYNC_UPDATES_AVAILABLE           → request_sync for the item's connection
//   ITEM / ERROR with ITEM_LOGIN_REQUIRED, ITEM_LOCKED → connection active → needs_reauth + audit row
//   ITEM / USER_PERMISSION_REVOKED, or ERROR with
//     USER_PERMISSION_REVOKED or ITEM_NOT_FOUND       → request_revoke
//   anything else verified                           → 200, counted as ignored
//
// Answers: 200 once the effect committed (also for an unknown item, logged and counted, and for
// ignored webhooks), 400 for any verification failure or a verified body that is not a webhook
// (nothing stored, nothing enqueued), 413 past the body limit, 503 when the database is
// unavailable or a key cannot be fetched right now (the sender retries).
//
// Key cache: by kid, at most keys_max entries. Keys are fetched on a schedule (run_key_refresh:
// every key_ttl each known key is fetched again, so expired_at set by Plaid's rotation arrives)
// and on a kid not in the cache; never again per request for a kid we hold. A kid Plaid does not
// know is remembered as unknown for unknown_kid_retry. Fetches for kids not in the cache are
// budgeted per sender address (key_fetches_max per key_fetch_window, service/source_budget.hpp),
// so a forger sending tokens with random kids spends its own budget, not the one Plaid's own
// addresses need when Plaid starts signing with a new key; key_fetches_total_max bounds all
// senders together (what Plaid's rate limit allows us).
//
// Replays (issue #23): the hash of every token that verified is remembered for its age window
// (max_age + future_skew, service/webhook_replays.hpp), and the same token again inside it is
// answered 409 with nothing done.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "connectors/plaid/client.hpp"
#include "connectors/plaid/webhook_verify.hpp"
#include "core/limits.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "service/http.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"
#include "service/source_budget.hpp"
#include "service/webhook_replays.hpp"

namespace bankworker::limits {

// Plaid's webhook bodies are a few hundred bytes; a verified body larger than this is not parsed.
inline constexpr std::size_t plaid_webhook_body_bytes_max = 64 * 1024;
// Verification keys remembered at once (Plaid has one current key and a few expired ones).
inline constexpr std::size_t plaid_webhook_keys_max = 1024;
static_assert(plaid_webhook_body_bytes_max <= webhook_body_bytes_max);

}  // namespace bankworker::limits

namespace bankworker::plaid {

using service::http_request;
using service::http_response;
using service::http_route;
using service::logger;
using service::metrics_registry;
using service::source_budget;
using service::webhook_replays;

inline constexpr std::string_view plaid_webhook_path = "/webhooks/plaid";

// Fetches the JWK for a kid (in production plaid::client::get_webhook_verification_key). Returns
// nothing when Plaid does not know the kid; throws when Plaid could not be asked (network, 5xx,
// rate limit), which the route answers 503 without remembering anything.
using verification_key_fetcher =
    std::function<boost::asio::awaitable<std::optional<plaid::verification_key>>(std::string kid)>;

struct plaid_webhook_settings {
  plaid::webhook_verify_settings verify;
  std::chrono::seconds key_ttl{3600};
  std::chrono::seconds unknown_kid_retry{300};
  std::size_t keys_max = 64;
  // Per sender address: Plaid sends from a few addresses, and a new key costs one fetch.
  std::size_t key_fetches_max = 10;
  std::size_t key_fetches_total_max = 100;
  std::chrono::seconds key_fetch_window{60};
  // The clock iat and expired_at are compared with (tests move it).
  std::function<std::chrono::system_clock::time_point()> now = [] { return std::chrono::system_clock::now(); };
};

struct plaid_webhook_fields;  // what a verified body asks for (plaid_webhooks.cpp)

class plaid_webhooks {
 public:
  // Everything passed by reference outlives this object (the runtime owns them all).
  plaid_webhooks(db::pool& connections, const db::key_store& keys, boost::asio::thread_pool& blocking,
                 metrics_registry& metrics, logger& log, verification_key_fetcher fetch_key,
                 plaid_webhook_settings settings);

  http_route route();
  // Fetches every known key again each key_ttl until stop_key_refresh(); spawn on the io_context.
  boost::asio::awaitable<void> run_key_refresh();
  // Ends run_key_refresh soon; safe from any thread.
  void stop_key_refresh();
  // One refresh round now (run_key_refresh calls it; tests too).
  boost::asio::awaitable<void> refresh_keys();

 private:
  enum class key_lookup_status { found, unknown, unavailable };
  struct key_lookup {
    key_lookup_status status = key_lookup_status::unavailable;
    std::optional<plaid::verification_key> key;
  };
  struct cached_key {
    std::optional<plaid::verification_key> key;  // nothing: Plaid said it does not know the kid
    std::chrono::steady_clock::time_point fetched_at;
    bool fetching = false;
  };
  enum class fetch_permission { fetch, use_cached, unknown, busy };

  boost::asio::awaitable<http_response> handle(http_request request);
  // Applies a verified webhook's effect to every connection holding its item; `token` is
  // released from the replay memory when the effect could not be applied.
  boost::asio::awaitable<http_response> apply_effect(plaid_webhook_fields webhook, std::string token);
  boost::asio::awaitable<key_lookup> key_for(std::string kid, std::string source);
  fetch_permission may_fetch(const std::string& kid, std::string_view source, std::chrono::steady_clock::time_point now,
                             std::optional<plaid::verification_key>& cached);
  bool evict_one_locked();
  void remember(const std::string& kid, std::optional<plaid::verification_key> key,
                std::chrono::steady_clock::time_point now);
  // Drops `kid`'s entry; one being fetched only when the caller is the one fetching it.
  void forget(const std::string& kid, bool fetched_by_caller);
  metrics_registry::counter& outcome(std::string_view name);

  db::pool& connections_;
  const db::key_store& keys_;
  boost::asio::thread_pool& blocking_;
  logger& log_;
  const verification_key_fetcher fetch_key_;
  const plaid_webhook_settings settings_;
  std::map<std::string, metrics_registry::counter*, std::less<>> outcomes_;
  std::mutex cache_mutex_;  // never held across co_await
  std::map<std::string, cached_key, std::less<>> cache_;
  source_budget fetch_budget_;
  webhook_replays replays_;
  std::mutex refresh_mutex_;
  std::unique_ptr<boost::asio::steady_timer> refresh_timer_;  // set while run_key_refresh runs
  bool refresh_stopping_ = false;
};

}  // namespace bankworker::plaid
