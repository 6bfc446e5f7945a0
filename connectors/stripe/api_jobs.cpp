#include "connectors/stripe/api_jobs.hpp"

#include <algorithm>
#include <set>

#include <simdjson.h>

#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/thin_event.hpp"
#include "core/assert.hpp"
#include "db/external_calls.hpp"
#include "db/tenant_scope.hpp"
#include "service/external_calls.hpp"

namespace bankworker::stripe {

using service::logger;
using service::to_external_call;
using service::count_provider_call;

namespace asio = boost::asio;

namespace {

// What the read transaction of a stripe.post run found: the event (read once) and the key.
struct post_read {
  std::optional<stored_event> event;
  std::optional<crypto::secret> tenant_key;  // empty: none for the tenant
};

// Of a plan's legs awaiting settlement, the objects the ledger already holds a fee or conversion
// entry of (another event about the same money settled them): those are not fetched again.
std::set<std::string, std::less<>> settled_elsewhere(pqxx::transaction_base& tx, const posting_plan& plan) {
  std::vector<std::string> keys;
  std::vector<const settlement_leg*> awaiting;
  for (const settlement_leg& leg : plan.legs) {
    if (leg.settlement || !leg.fetch) continue;
    const settlement_keys leg_keys = settlement_keys_of(leg);
    keys.push_back(leg_keys.fee);
    keys.push_back(leg_keys.fx);
    awaiting.push_back(&leg);
  }
  const std::set<std::string, std::less<>> existing = existing_entries(tx, keys);
  std::set<std::string, std::less<>> settled;
  for (const settlement_leg* leg : awaiting) {
    const settlement_keys leg_keys = settlement_keys_of(*leg);
    if (existing.contains(leg_keys.fee) || existing.contains(leg_keys.fx)) settled.insert(leg->object_id);
  }
  return settled;
}

// The parsing a stripe.post run does, in plain functions: a coroutine may resume on another thread
// than it started on, so it must not hold a thread_local parser across a co_await.
posting_plan plan_body(std::string_view body, const core::currency_table& currencies, bool& thin) {
  thread_local simdjson::dom::parser parser;
  posting_plan plan = plan_postings(parser, body, currencies);
  thin = plan.status == plan_status::ignore && is_thin_event(parser, body);
  return plan;
}

posting_plan complete_fetched(posting_plan plan, std::span<const fetched_object> fetched,
                              const core::currency_table& currencies) {
  thread_local simdjson::dom::parser parser;
  return complete_plan(parser, std::move(plan), fetched, currencies);
}

std::optional<thin_event> parse_thin(std::string_view body, std::string& error) {
  thread_local simdjson::dom::parser parser;
  return parse_thin_event(parser, body, error);
}

// Whether a leg's settlement is fetched: every leg's with fetch_every_leg, else only a charge's
// balance transaction named by id (what the stripe.post job has fetched since issue #6).
bool fetched_leg(const settlement_leg& leg, bool fetch_every_leg) {
  return fetch_every_leg || (leg.name == "gross" && leg.fetch->object == "balance_transaction");
}

// What of plan.to_fetch is still to be fetched: the requests of legs not settled elsewhere.
std::vector<fetch_request> still_to_fetch(const posting_plan& plan, const std::set<std::string, std::less<>>& settled,
                                          bool fetch_every_leg) {
  std::vector<fetch_request> out;
  for (const settlement_leg& leg : plan.legs) {
    if (leg.settlement || !leg.fetch || settled.contains(leg.object_id)) continue;
    if (!fetched_leg(leg, fetch_every_leg)) continue;
    if (std::find(out.begin(), out.end(), *leg.fetch) == out.end()) out.push_back(*leg.fetch);
  }
  return out;
}

stripe::inbox_event inbox_event_of(const core::uuid& tenant, stripe::listed_event event) {
  stripe::inbox_event out;
  out.tenant = tenant;
  out.event_id = std::move(event.id);
  out.type = std::move(event.type);
  out.account = std::move(event.account);
  out.livemode = event.livemode;
  out.created_s = event.created_s;
  out.body = std::move(event.body);
  return out;
}

}  // namespace

queue::outcome outcome_of(const stripe::api_error& failure, std::string_view what) {
  const std::string reason = std::string(what) + ": Stripe " + std::string(stripe::to_string(failure.kind)) +
                             (failure.http_status ? " (HTTP " + std::to_string(failure.http_status) + ")" : "") + ": " +
                             failure.message;
  switch (failure.kind) {
    case stripe::api_error_class::rate_limited:
      return queue::outcome::retry(reason, failure.retry_after);
    case stripe::api_error_class::transient:
      return queue::outcome::retry(reason);
    case stripe::api_error_class::credentials:
      return queue::outcome::needs_user_action(reason);
    case stripe::api_error_class::not_found:
    case stripe::api_error_class::permanent:
    case stripe::api_error_class::response_invalid:
    case stripe::api_error_class::refused:
      return queue::outcome::failed_permanently(reason);
  }
  return queue::outcome::failed_permanently(reason);
}

stripe_api_jobs::stripe_api_jobs(db::pool& connections, db::key_store& keys, stripe::inbox& inbox,
                                 const stripe::api_client& api, const core::currency_table& currencies,
                                 crypto::secret platform_key, logger& log, stripe_api_job_settings settings)
    : connections_(connections), keys_(keys), inbox_(inbox), api_(api), currencies_(currencies),
      platform_key_(std::move(platform_key)), log_(log), settings_(settings) {
  if (settings_.recovery_pages_max == 0 || settings_.recovery_pages_max > recovery_pages_max_max) {
    throw std::invalid_argument("recovery_pages_max must be 1…recovery_pages_max_max");
  }
  if (settings_.recovery_page_limit == 0 || settings_.recovery_page_limit > stripe::events_page_limit_max) {
    throw std::invalid_argument("recovery_page_limit must be 1…events_page_limit_max");
  }
}

namespace {

// A Stripe call's outcome label, from its HTTP status: a fixed set, so the series stay bounded.
std::string_view call_outcome(const stripe::api_call_record& call) {
  if (call.http_status == 0) return "no_response";
  if (call.http_status >= 200 && call.http_status < 300) return "ok";
  if (call.http_status == 429) return "rate_limited";
  if (call.http_status >= 500) return "server_error";
  return "client_error";
}

}  // namespace

void stripe_api_jobs::log_calls(const job_context&, const core::uuid& tenant,
                                const std::vector<stripe::api_call_record>& calls) const {
  if (calls.empty()) return;
  if (metrics_ != nullptr) {
    for (const stripe::api_call_record& call : calls) count_provider_call(*metrics_, "stripe", call, call_outcome(call));
  }
  std::vector<db::external_call> rows;
  rows.reserve(calls.size());
  for (const stripe::api_call_record& call : calls) rows.push_back(to_external_call("stripe", call));
  db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { db::append_external_calls(tx, tenant, rows); });
}

const crypto::secret* stripe_api_jobs::key_for(const std::optional<crypto::secret>& tenant_key,
                                               const std::optional<std::string>& account) const noexcept {
  if (tenant_key) return &*tenant_key;
  // The platform key reads only connected accounts' objects (Stripe-Account).
  if (!platform_key_.empty() && account) return &platform_key_;
  return nullptr;
}

asio::awaitable<prepared_post> stripe_api_jobs::prepare_post(queue::job job, job_context context,
                                                             std::string event_id) const {
  prepared_post out;
  const core::uuid tenant = job.ref.tenant;
  // 1. One short transaction: the event, and the key when the event awaits posting.
  post_read read = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      post_read found;
      found.event = load_event(tx, event_id);
      if (found.event && (awaits_posting(found.event->state) || found.event->settlement_awaited)) {
        found.tenant_key = load_api_key(tx, keys_, tenant);
      }
      return found;
    });
  });
  if (!read.event) co_return out;  // the posting transaction fails the job: not in the inbox
  out.state = read.event->state;
  // A posted event awaiting settlement is planned again: the fetch below completes it.
  if (!awaits_posting(*out.state) && !read.event->settlement_awaited) co_return out;
  // 2. Planned once; a thin event from its fetched related object instead.
  bool thin = false;
  posting_plan plan = plan_body(read.event->body, currencies_, thin);
  if (thin) {
    auto planning = plan_thin_event(context, tenant, read.event->body, read.tenant_key, plan);
    out.stop = co_await std::move(planning);
    if (out.stop) co_return out;
  }
  // 3. What the plan still needs from the API, fetched with no transaction open.
  const crypto::secret* key = key_for(read.tenant_key, plan.account);
  if (plan.status == plan_status::post && plan.awaiting_settlement() && key != nullptr) {
    auto settling = settle(context, tenant, *key, plan);
    out.stop = co_await std::move(settling);
    if (out.stop) co_return out;
  }
  read.tenant_key.reset();  // zeroed now: the key is not needed past the calls
  out.plan = std::move(plan);
  co_return out;
}

asio::awaitable<std::optional<queue::outcome>> stripe_api_jobs::plan_thin_event(
    const job_context& context, const core::uuid& tenant, std::string_view body,
    const std::optional<crypto::secret>& tenant_key, posting_plan& plan) const {
  std::string error;
  const std::optional<thin_event> thin = parse_thin(body, error);
  if (!thin) co_return queue::outcome::needs_user_action("thin event: " + error);
  const std::optional<std::string> type = snapshot_type_of(*thin);
  if (!type) co_return std::nullopt;  // no money we post: the plan ignores it
  const std::string what = "thin event " + thin->id + ": related " + thin->related->type + " " + thin->related->id;
  const crypto::secret* key = key_for(tenant_key, thin->account);
  if (key == nullptr) {
    co_return queue::outcome::needs_user_action(
        what + " cannot be fetched without a Stripe API key for the tenant (bankworker stripe key set)");
  }
  api_credentials credentials;
  credentials.key = key;
  credentials.account = thin->account;
  auto fetching = api_.get_object(std::move(credentials), thin->related->url, thin->related->id, thin->related->type);
  api_result<std::string> fetched = co_await std::move(fetching);
  const std::vector<api_call_record> calls{fetched.call};
  co_await context.run_db([&] { log_calls(context, tenant, calls); });
  if (!fetched.ok()) co_return outcome_of(fetched.failure, what);
  bool snapshot_thin = false;
  plan = plan_body(snapshot_event_json(*thin, *type, *fetched.value), currencies_, snapshot_thin);
  co_return std::nullopt;
}

asio::awaitable<std::optional<queue::outcome>> stripe_api_jobs::settle(const job_context& context,
                                                                       const core::uuid& tenant,
                                                                       const crypto::secret& key,
                                                                       posting_plan& plan) const {
  const std::set<std::string, std::less<>> settled = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { return settled_elsewhere(tx, plan); });
  });
  for (std::size_t round = 0; round < fetch_rounds_max && plan.status == plan_status::post; ++round) {
    const std::vector<fetch_request> wanted = still_to_fetch(plan, settled, settings_.fetch_every_leg);
    if (wanted.empty()) break;
    BW_INVARIANT(wanted.size() <= fetched_objects_max);
    std::vector<fetched_object> fetched;
    std::vector<api_call_record> calls;
    std::optional<queue::outcome> stop;
    for (const fetch_request& request : wanted) {
      api_credentials credentials;
      credentials.key = &key;
      credentials.account = plan.account;
      auto getting = api_.get_object(std::move(credentials), request.path, request.id, request.object);
      api_result<std::string> answer = co_await std::move(getting);
      calls.push_back(answer.call);
      if (!answer.ok()) {
        stop = outcome_of(answer.failure, request.object + " " + request.id);
        break;
      }
      fetched.push_back({request, std::move(*answer.value)});
    }
    co_await context.run_db([&] { log_calls(context, tenant, calls); });
    if (stop) co_return stop;
    plan = complete_fetched(std::move(plan), fetched, currencies_);
  }
  if (plan.status == plan_status::fail) co_return queue::outcome::failed_permanently("event " + plan.event_id + ": " + plan.reason);
  co_return std::nullopt;
}

job_handler stripe_api_jobs::recover_handler() {
  return [this](queue::job job, job_context context) -> asio::awaitable<queue::outcome> {
    return recover(std::move(job), std::move(context));
  };
}

asio::awaitable<queue::outcome> stripe_api_jobs::recover(queue::job job, job_context context) const {
  const core::uuid tenant = job.ref.tenant;
  struct scopes {
    std::optional<crypto::secret> tenant_key;
    std::vector<std::string> accounts;
  };
  scopes found = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      scopes s;
      s.tenant_key = stripe::load_api_key(tx, keys_, tenant);
      if (!platform_key_.empty()) s.accounts = stripe::connected_accounts(tx, recovery_accounts_max);
      // Events posted while no key could fetch their balance transactions: stripe.post completes
      // them now that one is here (settlement_marks.hpp).
      if (s.tenant_key || !s.accounts.empty()) enqueue_settlement_completions(tx, tenant, settlement_completions_max);
      return s;
    });
  });
  if (found.tenant_key) {
    stripe::api_credentials credentials;
    credentials.key = &*found.tenant_key;
    auto running = recover_scope(job, context, std::string(stripe::tenant_event_scope), std::move(credentials));
    if (std::optional<queue::outcome> stop = co_await std::move(running)) co_return *stop;
  }
  for (const std::string& account : found.accounts) {
    stripe::api_credentials credentials;
    credentials.key = &platform_key_;
    credentials.account = account;
    auto running = recover_scope(job, context, account, std::move(credentials));
    if (std::optional<queue::outcome> stop = co_await std::move(running)) co_return *stop;
  }
  co_return queue::outcome::done();
}

// Longer than 70 lines for now: the walk keeps its state (the cursor, the newest event seen, the
// page boundary of a backward walk and two counts) in this one coroutine frame across pages and
// both directions; the next change to recovery should give that state a struct of its own and
// split the page step out.
asio::awaitable<std::optional<queue::outcome>> stripe_api_jobs::recover_scope(const queue::job& job,
                                                                              const job_context& context,
                                                                              std::string scope,
                                                                              stripe::api_credentials credentials) const {
  // `job` and `context` live in recover()'s frame, which awaits this one.
  const core::uuid tenant = job.ref.tenant;
  const std::optional<std::string> start = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { return stripe::load_event_cursor(tx, scope); });
  });
  std::vector<stripe::api_call_record> calls;
  std::optional<queue::outcome> stop;
  // Forward (a cursor): pages newer than it, each the page next to the cursor, so the cursor moves
  // page by page. Backward (first run): from the newest event down; the cursor is set to the
  // newest event once the walk ends, whatever page it stopped at.
  std::optional<std::string> cursor = start;
  std::optional<std::string> newest;
  std::optional<std::string> older_than;
  std::int64_t recovered_total = 0;     // for the log
  std::int64_t recovered_unsaved = 0;   // backward walk: counted into the cursor row at the end
  for (std::size_t page_number = 0; page_number < settings_.recovery_pages_max; ++page_number) {
    if (context.lease_lost()) break;
    stripe::events_query query;
    query.limit = settings_.recovery_page_limit;
    if (start) query.ending_before = cursor;
    else query.starting_after = older_than;
    auto listing = api_.list_events(credentials, std::move(query));
    stripe::api_result<stripe::events_page> page = co_await std::move(listing);
    calls.push_back(page.call);
    if (!page.ok()) {
      if (start && page.failure.kind == stripe::api_error_class::not_found) {
        // Stripe lists events for 30 days; a cursor older than that is unknown to it. Forget it:
        // the next run walks back from the newest event (the inbox drops what it has already).
        co_await context.run_db([&] {
          db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { stripe::delete_event_cursor(tx, scope); });
        });
        stop = queue::outcome::retry("stripe recovery: Stripe no longer lists the cursor event of " + scope +
                                     "; the next run reads back from the newest event");
        break;
      }
      stop = outcome_of(page.failure, "listing events of " + scope);
      break;
    }
    std::vector<stripe::listed_event>& events = page.value->events;
    if (events.empty()) {
      // Nothing new: touch the cursor anyway, so the scheduler sees this scope was read
      // (schedule_stripe_recovery serves the least recently recovered tenants first).
      if (start) {
        co_await context.run_db([&] {
          db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { stripe::save_event_cursor(tx, scope, *cursor, 0); });
        });
      }
      break;
    }
    const std::string page_newest = events.front().id;
    const std::string page_oldest = events.back().id;
    if (!newest) newest = page_newest;
    // Oldest first, as Stripe would have delivered them.
    std::int64_t recovered = 0;
    for (auto it = events.rbegin(); it != events.rend() && !stop; ++it) {
      auto storing = inbox_.store(inbox_event_of(tenant, std::move(*it)));
      switch (co_await std::move(storing)) {
        case stripe::inbox_outcome::stored: ++recovered; break;
        case stripe::inbox_outcome::duplicate: break;
        // The event names its tenant, so the inbox never parks it as unrouted; if it did, it is
        // durable there and `stripe connect` moves it in.
        case stripe::inbox_outcome::unrouted: break;
        case stripe::inbox_outcome::rejected:
          log_.warn("stripe recovery: the inbox refused a listed event",
                    {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"scope", scope}});
          break;
        case stripe::inbox_outcome::unavailable:
          stop = queue::outcome::retry("stripe recovery: the inbox is unavailable");
          break;
      }
    }
    if (stop) break;
    recovered_total += recovered;
    if (start) {
      // This page's events are durable: the cursor may pass them.
      cursor = page_newest;
      co_await context.run_db([&] {
        db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { stripe::save_event_cursor(tx, scope, *cursor, recovered); });
      });
    } else {
      recovered_unsaved += recovered;
      older_than = page_oldest;
    }
    if (!page.value->has_more) break;
    if (!start && page_number + 1 == settings_.recovery_pages_max) {
      log_.warn("stripe recovery: events older than recovery_pages_max pages were not read on the first run",
                {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"scope", scope}});
    }
  }
  if (!start && newest && !stop) {
    co_await context.run_db([&] {
      db::with_tenant(connections_, tenant,
                      [&](pqxx::work& tx) { stripe::save_event_cursor(tx, scope, *newest, recovered_unsaved); });
    });
  }
  co_await context.run_db([&] { log_calls(context, tenant, calls); });
  if (recovered_total > 0) {
    log_.info("stripe recovery stored events webhooks had not delivered",
              {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"scope", scope}, {"events", recovered_total}});
  }
  co_return stop;
}

service::scheduled_task stripe_recovery_task(db::pool& connections, bool platform_key_held,
                                             std::chrono::milliseconds interval, std::uint32_t tenants) {
  BW_ASSERT(tenants > 0 && tenants <= stripe_recovery_tenants_max);
  db::pool* pool = &connections;
  return {std::string(stripe_recovery_schedule), interval,
          [pool, platform_key_held, tenants](const std::optional<std::string>&) {
            db::pool::lease lease = pool->checkout();
            pqxx::work tx(lease.connection(), "bankworker_schedule_stripe_recovery");
            stripe::schedule_stripe_recovery(tx, platform_key_held, tenants);
            lease.commit(tx);
            return false;
          }};
}

}  // namespace bankworker::stripe
