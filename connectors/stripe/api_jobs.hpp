#pragma once
// The Stripe API side of the worker (DESIGN.md §1.3, issue #6 items 6 and 8).
//
// Posting reads once (issue #17): prepare_post() is the part of one stripe.post run before its
// posting transaction. One short transaction reads the event and the tenant's key; the event is
// planned once (plan_postings); a thin event about money has its related object fetched first and
// its snapshot planned instead; then every balance transaction the plan lists in `to_fetch` is
// fetched with no transaction open and handed to complete_plan, at most fetch_rounds_max rounds (a
// charge named only by its id, then its balance transaction). A leg whose fee or conversion entry
// the ledger holds already (another event about the same money settled it) is not fetched again.
// The plan goes to the posting transaction (post_job.cpp), which posts its entries with the job's
// completion and does not read the event's body again. An API failure ends the job with its
// outcome (429: retry after Retry-After; 5xx/network: retry; 401/403: needs user action; 404 and
// other 4xx: failed) and posts nothing; a retry repeats the fetch (entries are keyed by the money
// object and leg, so a second post is a no-op). Which key: the tenant's own sealed restricted key
// (`bankworker stripe key set`); else, for a Connect event (`account` set), the platform key with
// Stripe-Account; else none, and the event posts its presentment side only, as before.
//
// Thin events (connectors/stripe/thin_event.hpp): for a stored thin event about a money object we
// post, prepare_post() GETs the related object (no transaction open) and plans the snapshot event
// built from it in place of the stored body. A
// failed fetch ends the job as any API failure does (5xx: retry; the ledger is untouched). No key:
// needs user action. A thin event about anything else is left to the posting, which ignores it.
//
// Recovery: the scheduler's stripe.recover_events task enqueues one stripe.recover job per tenant
// with a key (bankworker.schedule_stripe_recovery). The job lists /v1/events per scope (the
// tenant's key; each mapped connected account with the platform key) from the scope's cursor in
// bankworker.stripe_event_cursors, and stores every listed event through the webhook inbox (so a
// duplicate of a delivered event changes nothing, and a new one gets its stripe.post job in the
// same transaction); the cursor moves only after a page's events are durable. First run (no
// cursor): walks back from the newest event with starting_after, at most recovery_pages_max pages;
// later runs read forward with ending_before, a page at a time, oldest page first.
// Each run also hands up to settlement_completions_max events awaiting settlement (posted on their
// presentment side while no key was configured) back to stripe.post, which fetches their balance
// transactions and posts the conversion and fee entries (settlement_marks.hpp).

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "connectors/stripe/api_client.hpp"
#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/posting.hpp"
#include "core/currency.hpp"
#include "crypto/secret.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"
#include "ledger/ledger.hpp"
#include "queue/queue.hpp"
#include "service/job.hpp"
#include "service/log.hpp"
#include "service/metrics.hpp"
#include "service/provider.hpp"

namespace bankworker::stripe {

using service::logger;
using service::metrics_registry;
using service::complete_in_or_throw;
using service::job_context;
using service::job_handler;
using service::lease_lost_error;

inline constexpr std::string_view stripe_recover_kind = "stripe.recover";
// The scheduler task that enqueues the stripe.recover jobs (its row in bankworker.schedules).
inline constexpr std::string_view stripe_recovery_schedule = "stripe.recover_events";
inline constexpr std::uint32_t stripe_recovery_tenants_max = 10'000;  // schedule_stripe_recovery refuses more
// Bounds (STYLE.md §5).
inline constexpr std::size_t recovery_pages_max_max = 1'000;
inline constexpr std::size_t recovery_accounts_max = 1'000;

struct stripe_api_job_settings {
  // Pages of /v1/events one scope reads per job; a backlog is read over several runs.
  std::size_t recovery_pages_max = 20;
  std::size_t recovery_page_limit = stripe::events_page_limit_max;
  // Fetch the settlement of every leg the plan lists in to_fetch (refunds, disputes, payouts,
  // application fees, a charge named only by its id, …), so every leg that moves the Stripe balance
  // is booked from its balance transaction (issue #16). Off: only a charge's balance transaction
  // named by id, as before issue #16's wiring.
  bool fetch_every_leg = true;
};

// What one stripe.post run read, fetched and planned before its posting transaction.
struct prepared_post {
  std::optional<queue::outcome> stop;  // set: end the job with this outcome, post nothing
  std::optional<std::string> state;    // the event's state as read; nothing: not in the inbox
  std::optional<posting_plan> plan;    // set when the event awaits posting (received, fetching or
                                       // failed) or, posted, awaits settlement (migration 0043)
};

// Whether an event in `state` is still to be posted (a failed one is tried again).
inline bool awaits_posting(std::string_view state) noexcept {
  return state == "received" || state == "fetching" || state == "failed";
}

class stripe_api_jobs {
 public:
  // Everything passed by reference outlives this object (the runtime owns them all).
  // `platform_key` may be empty: no platform key configured.
  stripe_api_jobs(db::pool& connections, db::key_store& keys, stripe::inbox& inbox, const stripe::api_client& api,
                  const core::currency_table& currencies, crypto::secret platform_key, logger& log,
                  stripe_api_job_settings settings);

  // Reads event `event_id` of the job's tenant once, plans it and fetches what the plan still
  // needs (see the top). `job` and `context` are the stripe.post run's.
  boost::asio::awaitable<prepared_post> prepare_post(queue::job job, job_context context, std::string event_id) const;
  job_handler recover_handler();
  bool has_platform_key() const noexcept { return !platform_key_.empty(); }
  // Counts every Stripe API call in bankworker_provider_calls_total and its latency histogram;
  // `metrics` outlives this object. Without it calls are only logged.
  void set_metrics(metrics_registry& metrics) noexcept { metrics_ = &metrics; }

 private:
  boost::asio::awaitable<queue::outcome> recover(queue::job job, job_context context) const;
  boost::asio::awaitable<std::optional<queue::outcome>> recover_scope(const queue::job& job, const job_context& context,
                                                                      std::string scope,
                                                                      stripe::api_credentials credentials) const;
  void log_calls(const job_context& context, const core::uuid& tenant,
                 const std::vector<stripe::api_call_record>& calls) const;
  // The key for a call about `account`'s objects: the tenant's, else the platform key for a
  // connected account, else none.
  const crypto::secret* key_for(const std::optional<crypto::secret>& tenant_key,
                                const std::optional<std::string>& account) const noexcept;
  // A thin event's plan: its related object fetched and planned as its snapshot event; or the
  // outcome that ends the job.
  boost::asio::awaitable<std::optional<queue::outcome>> plan_thin_event(const job_context& context,
                                                                        const core::uuid& tenant, std::string_view body,
                                                                        const std::optional<crypto::secret>& tenant_key,
                                                                        posting_plan& plan) const;
  // Fetches what `plan` lists in to_fetch, except legs the ledger has settled already, and
  // completes it; or the outcome that ends the job.
  boost::asio::awaitable<std::optional<queue::outcome>> settle(const job_context& context, const core::uuid& tenant,
                                                               const crypto::secret& key, posting_plan& plan) const;

  db::pool& connections_;
  db::key_store& keys_;
  stripe::inbox& inbox_;
  const stripe::api_client& api_;
  const core::currency_table& currencies_;
  const crypto::secret platform_key_;
  logger& log_;
  const stripe_api_job_settings settings_;
  metrics_registry* metrics_ = nullptr;
};

// The queue outcome for a Stripe API failure (see the header comment).
queue::outcome outcome_of(const stripe::api_error& failure, std::string_view what);

// Missed-event recovery as a scheduler task: once per `interval` across every process, one
// stripe.recover job per tenant with a Stripe API key (all tenants with Connect accounts too when
// this worker holds the platform key), at most `tenants` per run (bankworker.schedule_stripe_recovery).
// The job itself lists /v1/events, so no tick waits on Stripe.
service::scheduled_task stripe_recovery_task(db::pool& connections, bool platform_key_held,
                                             std::chrono::milliseconds interval, std::uint32_t tenants = 1'000);

}  // namespace bankworker::stripe
