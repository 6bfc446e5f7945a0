#include "connectors/stripe/api_jobs.hpp"

#include <simdjson.h>

#include "connectors/stripe/posting.hpp"
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

// The event a stripe.post job names; nothing when the payload has none (the posting fails the job).
std::optional<std::string> payload_event_id(std::string_view payload_json) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element payload;
  std::string_view event_id;
  if (parser.parse(payload_json.data(), payload_json.size()).get(payload) != simdjson::SUCCESS ||
      payload["event_id"].get(event_id) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return std::string(event_id);
}

// What the read transaction of a fee look-up found: the charge, its gross entry and the key to
// fetch its balance transaction with.
struct fee_request {
  std::string charge_id;
  std::string balance_transaction_id;
  ledger::entry gross;
  std::optional<std::string> account;
  std::optional<crypto::secret> tenant_key;  // empty: use the platform key
};

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

asio::awaitable<related_fetch> stripe_api_jobs::fetch_related_object(queue::job job, job_context context) const {
  related_fetch out;
  const std::optional<std::string> event_id = payload_event_id(job.payload_json);
  if (!event_id) co_return out;
  const core::uuid tenant = job.ref.tenant;
  struct fetch_request {
    stripe::thin_event event;
    std::string snapshot_type;
    std::optional<crypto::secret> tenant_key;  // empty: use the platform key
  };
  // 1. A short transaction: the event, whether it is a thin event about money, the key.
  std::optional<fetch_request> request = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> std::optional<fetch_request> {
      const auto stored = stripe::load_event(tx, *event_id);
      if (!stored || (stored->state != "received" && stored->state != "failed")) return std::nullopt;
      thread_local simdjson::dom::parser parser;
      if (!stripe::is_thin_event(parser, stored->body)) return std::nullopt;
      std::string error;
      std::optional<stripe::thin_event> thin = stripe::parse_thin_event(parser, stored->body, error);
      if (!thin) return std::nullopt;  // the posting fails it, with the reason
      std::optional<std::string> type = stripe::snapshot_type_of(*thin);
      if (!type) return std::nullopt;  // no money we post: the posting ignores it
      fetch_request found{std::move(*thin), std::move(*type), stripe::load_api_key(tx, keys_, tenant)};
      return std::optional<fetch_request>(std::move(found));
    });
  });
  if (!request) co_return out;
  const std::string what = "thin event " + request->event.id + ": related " + request->event.related->type + " " +
                           request->event.related->id;
  // The platform key reads only connected accounts' objects (Stripe-Account).
  if (!request->tenant_key && (platform_key_.empty() || !request->event.account)) {
    out.stop = queue::outcome::needs_user_action(
        what + " cannot be fetched without a Stripe API key for the tenant (bankworker stripe key set)");
    co_return out;
  }

  // 2. The call, with no transaction open.
  stripe::api_credentials credentials;
  credentials.key = request->tenant_key ? &*request->tenant_key : &platform_key_;
  credentials.account = request->event.account;
  auto fetching = api_.get_object(std::move(credentials), request->event.related->url, request->event.related->id,
                                  request->event.related->type);
  stripe::api_result<std::string> fetched = co_await std::move(fetching);
  request->tenant_key.reset();  // zeroed now: the key is not needed past the call
  const std::vector<stripe::api_call_record> calls{fetched.call};
  co_await context.run_db([&] { log_calls(context, tenant, calls); });
  if (!fetched.ok()) {
    out.stop = outcome_of(fetched.failure, what);
    co_return out;
  }
  out.snapshot = stripe::snapshot_event_json(request->event, request->snapshot_type, *fetched.value);
  co_return out;
}

asio::awaitable<fee_lookup> stripe_api_jobs::look_up_fees(queue::job job, job_context context,
                                                          std::optional<std::string> snapshot) const {
  fee_lookup out;
  const std::optional<std::string> event_id = payload_event_id(job.payload_json);
  if (!event_id) co_return out;
  const core::uuid tenant = job.ref.tenant;
  // 1. A short transaction: the event, its plan, whether the fee is posted already, the key.
  std::optional<fee_request> request = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> std::optional<fee_request> {
      const auto stored = stripe::load_event(tx, *event_id);
      if (!stored || (stored->state != "received" && stored->state != "failed")) return std::nullopt;
      thread_local simdjson::dom::parser parser;
      stripe::posting_plan plan = stripe::plan_postings(parser, snapshot ? *snapshot : stored->body, currencies_);
      if (plan.status != stripe::plan_status::post || !plan.balance_transaction_id || !plan.charge_id) {
        return std::nullopt;
      }
      if (stripe::journal_entry_exists(tx, *plan.charge_id + ":fee") || stripe::journal_entry_exists(tx, *plan.charge_id + ":fx")) {
        return std::nullopt;
      }
      fee_request found;
      found.charge_id = *plan.charge_id;
      found.balance_transaction_id = *plan.balance_transaction_id;
      found.account = plan.account;
      bool have_gross = false;
      for (ledger::entry& entry : plan.entries) {
        if (entry.idempotency_key == found.charge_id + ":gross") {
          found.gross = std::move(entry);
          have_gross = true;
        }
      }
      if (!have_gross) return std::nullopt;
      found.tenant_key = stripe::load_api_key(tx, keys_, tenant);
      // The platform key reads only connected accounts' objects (Stripe-Account).
      if (!found.tenant_key && (platform_key_.empty() || !found.account)) return std::nullopt;
      return std::optional<fee_request>(std::move(found));
    });
  });
  if (!request) co_return out;  // no key, nothing to fetch, or fees already posted: gross only

  // 2. The call, with no transaction open.
  stripe::api_credentials credentials;
  credentials.key = request->tenant_key ? &*request->tenant_key : &platform_key_;
  credentials.account = request->account;
  auto fetching = api_.get_balance_transaction(std::move(credentials), request->balance_transaction_id);
  stripe::api_result<stripe::balance_transaction> fetched = co_await std::move(fetching);
  request->tenant_key.reset();  // zeroed now: the key is not needed past the call
  const std::vector<stripe::api_call_record> calls{fetched.call};
  co_await context.run_db([&] { log_calls(context, tenant, calls); });
  const std::string what = "balance transaction " + request->balance_transaction_id;
  if (!fetched.ok()) {
    out.stop = outcome_of(fetched.failure, what);
    co_return out;
  }
  // 3. The entries, posted by the caller with the event's own.
  stripe::posting_plan fees = stripe::fee_entries(request->gross, request->charge_id, *fetched.value, currencies_);
  if (fees.status != stripe::plan_status::post) {
    out.stop = queue::outcome::failed_permanently(what + ": " + fees.reason);
    co_return out;
  }
  out.entries = std::move(fees.entries);
  co_return out;
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
            tx.commit();
            return false;
          }};
}

}  // namespace bankworker::stripe
