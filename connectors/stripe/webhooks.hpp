#pragma once
// POST /webhooks/stripe/{tenant_id}, the Connect platform endpoint POST /webhooks/stripe, and the
// stripe.post job (DESIGN.md §1.3).
//
// The tenant route verifies Stripe-Signature against the tenant endpoint's active secrets before
// anything else touches the body, reads the few envelope fields the inbox needs, and answers only
// once the inbox has made the event durable (group commit): 2xx stored or duplicate, 400 bad
// signature, stale or malformed, 404 unknown tenant or no endpoint, 503 database unavailable.
// Nothing unauthenticated reaches the database (issue #23): the Stripe-Signature header's shape
// and timestamp are checked before any cache lookup (connectors/stripe precheck_signature); the
// opened secrets are cached in guarded memory, bounded, with a bounded negative cache for unknown
// tenants (connectors/stripe/webhook_secret_cache.hpp); and a tenant in neither is looked up only within a
// per-sender budget (service/source_budget.hpp), 429 past it. A secret added or removed reaches
// every worker as a NOTIFY on secret_channel (migration 0027), and forget_tenant() drops that
// tenant; forget_secrets() drops them all (SIGHUP, and whenever the listen connection was down).
//
// The platform route verifies against the platform endpoint's secret (held in guarded memory for
// the life of the process) and hands the event to the inbox without a tenant: the inbox routes it
// by its `account` in the storing transaction, to the mapped tenant's inbox (and a stripe.post
// job) or, unmapped, to the unrouted events until `bankworker stripe connect` moves them. Both are
// 2xx (outcomes "stored" and "unrouted"); the other answers are the tenant route's, without 404.
//
// The stripe.post job turns the stored event into journal entries with connectors/stripe's
// posting rules and records its own completion in the same transaction as the entries; jobs
// running at the same time for one tenant share that transaction (connectors/stripe/post_job.cpp).

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "connectors/stripe/api_jobs.hpp"
#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/signature.hpp"
#include "connectors/stripe/webhook_secret_cache.hpp"
#include "core/currency.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "queue/queue.hpp"
#include "service/http.hpp"
#include "service/job.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"
#include "service/source_budget.hpp"

namespace bankworker::limits {

// How long a request waits for another request's load of the same tenant's webhook secrets before
// looking at the cache anyway (a load is one indexed read; the pool's own wait is longer).
inline constexpr std::chrono::milliseconds webhook_secret_load_wait_ms{5'000};

}  // namespace bankworker::limits

namespace bankworker::stripe {

using service::logger;
using service::metrics_registry;
using service::settings;
using service::source_budget;
using service::source_budget_settings;
using service::http_request;
using service::http_response;
using service::http_route;

inline constexpr std::string_view stripe_post_kind = "stripe.post";

// The channel migration 0027 NOTIFYs with a tenant id whenever a webhook secret is added or removed.
inline constexpr std::string_view stripe_secret_channel = "bankworker_stripe_secrets";

struct stripe_webhook_settings {
  webhook_secret_cache_settings cache;
  // Secret lookups for tenants in neither cache. One sender gets 50 per 10 s (a worker restarting
  // under Stripe's full load warms 5 tenants a second per Stripe address; the rest retry), all
  // senders together 200 (20 transactions a second is noise to the database, and it is what a
  // flood of random tenant ids from many addresses can cost at most).
  source_budget_settings lookups{.per_source_max = 50, .total_max = 200, .window = std::chrono::seconds(10)};
  stripe::signature_settings signature;
};

class stripe_webhooks {
 public:
  // Everything passed by reference outlives this object (the runtime owns them all).
  stripe_webhooks(db::pool& connections, db::key_store& keys, stripe::inbox& inbox, boost::asio::thread_pool& blocking,
                  metrics_registry& metrics, logger& log, stripe_webhook_settings settings);

  http_route tenant_route();
  // The Connect platform route, verifying with `platform_secret`; call at most once.
  http_route platform_route(crypto::secret platform_secret);
  // Drops every cached secret and unknown tenant; safe from any thread.
  void forget_secrets();
  // Drops one tenant's entry (a NOTIFY on stripe_secret_channel); safe from any thread.
  void forget_tenant(const core::uuid& tenant);
  // For a NOTIFY payload: the tenant id it names, or every tenant when it names none.
  void forget_notified(std::string_view payload);

 private:
  boost::asio::awaitable<http_response> handle(http_request request);
  boost::asio::awaitable<http_response> handle_platform(http_request request);
  // Verifies, reads the envelope and stores: the part both routes share.
  boost::asio::awaitable<http_response> verify_and_store(http_request request, std::span<const crypto::secret> secrets,
                                                         std::optional<core::uuid> tenant);
  // The tenant's secrets from the cache or the database; nothing when the database is away.
  boost::asio::awaitable<std::optional<webhook_secret_cache::lookup>> load_secrets(core::uuid tenant,
                                                                                   std::uint64_t generation);
  metrics_registry::counter& outcome(std::string_view name);
  // The secrets of a tenant in neither cache: one request loads them (spending its sender's
  // budget), the others asking for the same tenant meanwhile wait for that load and read the
  // cache, so a burst of genuine deliveries after a start or an invalidation costs one lookup.
  boost::asio::awaitable<std::optional<webhook_secret_cache::lookup>> load_once(core::uuid tenant,
                                                                                std::string_view source);

  db::pool& connections_;
  db::key_store& keys_;
  stripe::inbox& inbox_;
  boost::asio::thread_pool& blocking_;
  logger& log_;
  const stripe_webhook_settings settings_;
  std::map<std::string, metrics_registry::counter*, std::less<>> outcomes_;
  webhook_secret_cache cache_;
  source_budget lookups_;
  metrics_registry::counter& loads_;
  std::mutex loading_mutex_;
  std::set<std::string, std::less<>> loading_;  // tenants whose secrets a request is loading now
  std::vector<crypto::secret> platform_secrets_;  // set once by platform_route, before serving
};

// The inbox hook: enqueues one stripe.post job per newly stored event, in the inbox's transaction.
stripe::inbox_hook enqueue_stripe_posts();

// Enqueues one stripe.post job per event id in `tx` (scoped to `tenant`), in the order given.
void enqueue_stripe_posts(pqxx::work& tx, const core::uuid& tenant, std::span<const std::string_view> event_ids);

// The stripe.post handler (connectors/stripe/post_job.cpp). `connections`, `currencies` and `api` outlive the dispatcher. `api`
// null: no Stripe API configured, events post gross only; else fees come with the gross entry
// (connectors/stripe/api_jobs.hpp). `log` (outlives the dispatcher too, or null) gets a warning for
// each batch of postings rolled back (its jobs then post alone).
job_handler stripe_post_handler(db::pool& connections, const core::currency_table& currencies,
                                const stripe_api_jobs* api = nullptr, logger* log = nullptr);

}  // namespace bankworker::stripe
