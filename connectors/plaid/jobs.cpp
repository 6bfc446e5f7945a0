#include "connectors/plaid/jobs.hpp"

#include "service/external_calls.hpp"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <simdjson.h>

#include "connectors/plaid/sync_buffer.hpp"
#include "core/json_text.hpp"
#include "crypto/random.hpp"
#include "db/connection_problem.hpp"
#include "db/audit.hpp"
#include "db/currencies.hpp"
#include "connectors/plaid/store.hpp"
#include "db/rate_limits.hpp"
#include "db/tenant_scope.hpp"
#include "service/command.hpp"

namespace bankworker::plaid {

using service::logger;
using service::metrics_registry;
using service::one_line;
using service::settings;
using service::to_external_call;
using service::register_provider_call;
using service::count_provider_call;

namespace asio = boost::asio;

namespace {

constexpr std::string_view actor = "worker";

// A payload field as text, or nothing when the payload is not an object holding it as a string.
std::optional<std::string> payload_text(const std::string& payload_json, const char* field) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element payload;
  std::string_view text;
  if (parser.parse(payload_json).get(payload) != simdjson::SUCCESS) return std::nullopt;
  if (payload[field].get(text) != simdjson::SUCCESS) return std::nullopt;
  return std::string(text);
}

std::optional<core::uuid> payload_connection(const queue::job& job) {
  const auto text = payload_text(job.payload_json, "connection_id");
  if (!text) return std::nullopt;
  return core::uuid::parse(*text);
}

void append_connection_audit(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                             std::string_view action, const core::uuid& connection, std::string details) {
  const std::string subject = connection.to_string();
  db::append_audit(tx, keys, {.tenant = tenant, .actor = actor, .action = action, .subject = subject,
                              .details = std::move(details)});
}

// {"key":"value"}, for audit details.
std::string json_object(std::string_view key, std::string_view value) {
  std::string out = "{";
  core::append_json_string(key, out);
  out.push_back(':');
  core::append_json_string(value, out);
  out.push_back('}');
  return out;
}

crypto::secret_context token_context(const core::uuid& tenant, const core::uuid& secret_id,
                                     const core::uuid& connection, const std::string& environment) {
  return {.purpose = crypto::secret_purpose::plaid_access_token,
          .tenant = tenant,
          .secret_id = secret_id,
          .subject_id = connection.to_string(),
          .environment = environment};
}

}  // namespace

plaid_jobs::plaid_jobs(db::pool& connections, db::key_store& keys, plaid::client& plaid, metrics_registry& metrics,
                       logger& log, plaid_job_settings settings)
    : connections_(connections), keys_(keys), plaid_(plaid), metrics_(metrics), log_(log),
      settings_(std::move(settings)) {
  constexpr std::string_view rows_name = "bankworker_plaid_sync_rows_total";
  constexpr std::string_view rows_help = "Transactions received from /transactions/sync and applied, by change.";
  rows_added_ = &metrics_.add_counter(rows_name, rows_help, {{"change", "added"}});
  rows_modified_ = &metrics_.add_counter(rows_name, rows_help, {{"change", "modified"}});
  rows_removed_ = &metrics_.add_counter(rows_name, rows_help, {{"change", "removed"}});
  // Issue #16: rows whose money could not be stored (a currency not declared yet) are kept in
  // bankworker.plaid_quarantine instead of failing their page, and applied once it is declared.
  constexpr std::string_view quarantine_name = "bankworker_plaid_quarantine_rows_total";
  constexpr std::string_view quarantine_help =
      "Bank rows set aside into bankworker.plaid_quarantine for their money, and quarantined rows applied later.";
  rows_quarantined_ = &metrics_.add_counter(quarantine_name, quarantine_help, {{"change", "quarantined"}});
  rows_released_ = &metrics_.add_counter(quarantine_name, quarantine_help, {{"change", "released"}});
  // Every endpoint these jobs call, with every outcome (ok and each error class), exists from
  // start-up at zero, so an increase() alert sees the first rate limit or invalid_api_keys.
  for (const std::string endpoint : {"/item/public_token/exchange", "/transactions/sync", "/item/remove"}) {
    register_provider_call(metrics_, "plaid", endpoint, "ok");
    // rate_limited is the first error class and refused the last (connectors/plaid/client.hpp).
    for (int kind = static_cast<int>(plaid::error_class::rate_limited);
         kind <= static_cast<int>(plaid::error_class::refused); ++kind) {
      register_provider_call(metrics_, "plaid", endpoint, plaid::to_string(static_cast<plaid::error_class>(kind)));
    }
  }
}

job_handler plaid_jobs::link_handler() {
  return [this](queue::job job, job_context context) { return link(std::move(job), context); };
}
job_handler plaid_jobs::sync_handler() {
  return [this](queue::job job, job_context context) { return sync(std::move(job), context); };
}
job_handler plaid_jobs::revoke_handler() {
  return [this](queue::job job, job_context context) { return revoke(std::move(job), context); };
}

asio::awaitable<std::optional<std::chrono::milliseconds>> plaid_jobs::wait_for_sync_token(
    const core::uuid& connection, const job_context& context) {
  std::vector<db::rate_bucket> buckets;
  if (settings_.sync_client_per_minute > 0) {
    buckets.push_back({"plaid:client:/transactions/sync", settings_.sync_client_per_minute});
  }
  if (settings_.sync_item_per_minute > 0) {
    buckets.push_back({"plaid:item:" + connection.to_string(), settings_.sync_item_per_minute});
  }
  if (buckets.empty()) co_return std::nullopt;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  // Bounded: each round either takes the tokens or sleeps; past rate_wait_in_job_max in total the
  // job hands its slot back and runs again later.
  std::chrono::milliseconds waited{0};
  for (;;) {
    const std::chrono::milliseconds wait =
        co_await context.run_db([&] { return db::take_rate_tokens(connections_, buckets); });
    if (wait.count() == 0) co_return std::nullopt;
    if (waited + wait > settings_.rate_wait_in_job_max) co_return wait;
    timer.expires_after(wait);
    co_await timer.async_wait(asio::use_awaitable);
    waited += wait;
  }
}

void plaid_jobs::count_call(const plaid::call_record& call, std::string_view outcome) {
  count_provider_call(metrics_, "plaid", call, outcome);
}

// plaid.link: exchange the public token, seal the access token, create (or re-link) the
// connection, enqueue its first sync — the last three in one transaction with the completion.
asio::awaitable<queue::outcome> plaid_jobs::link(queue::job job, job_context context) {
  const core::uuid tenant = job.ref.tenant;
  if (paused()) co_return queue::outcome::retry("Plaid work paused: API keys rejected", settings_.credentials_pause);
  const std::optional<std::string> public_token = payload_text(job.payload_json, "public_token");
  if (!public_token) co_return queue::outcome::failed_permanently("plaid.link payload has no public_token");

  // An earlier attempt may have committed (in doubt, or its completion was lost): the connection
  // it made names this job.
  if (job.attempt > 1 || job.in_doubt) {
    const auto existing = co_await context.run_db([&] {
      return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> std::optional<core::uuid> {
        const auto found = connection_linked_by_job(tx, tenant, job.ref.id);
        if (found) complete_in_or_throw(tx, context, job, queue::outcome::done());
        return found;
      });
    });
    if (existing) {
      context.mark_completed();
      co_return queue::outcome::done();
    }
  }

  plaid::result<plaid::exchange_result> exchanged = co_await plaid_.exchange_public_token(*public_token);
  count_call(exchanged.call, exchanged.ok() ? "ok" : plaid::to_string(exchanged.failure.kind));
  std::vector<db::external_call> calls{to_external_call("plaid", exchanged.call)};
  if (!exchanged.ok()) {
    co_return co_await finish_failure(std::move(job), context, std::nullopt, std::move(exchanged.failure),
                                      plaid_call::exchange, std::move(calls));
  }
  co_return co_await store_link(std::move(job), context, std::move(*exchanged.value), std::move(calls));
}

// The new connection, its sealed token, its audit row, its first sync and the job's completion,
// in one transaction; the connection's id.
core::uuid plaid_jobs::store_connection(const queue::job& job, const job_context& context,
                                        const plaid::exchange_result& linked, const core::uuid& secret_id,
                                        const std::vector<db::external_call>& calls) {
  const core::uuid tenant = job.ref.tenant;
  return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> core::uuid {
    std::optional<core::uuid> existing = find_connection_by_item(tx, tenant, linked.item_id);
    core::uuid id = existing.value_or(crypto::random_uuid());
    if (existing) {
      // Linking an item again (Link's update mode): the new token replaces the old one.
      const auto current = load_plaid_connection(tx, tenant, id, true);
      if (current && current->token_secret) keys_.shred_secret(tx, tenant, *current->token_secret, actor);
      set_connection_status(tx, tenant, id, connection_status::active, std::nullopt);
    } else {
      insert_plaid_connection(tx, tenant,
                              {.connection = id,
                               .environment = settings_.environment,
                               .item_id = linked.item_id,
                               .institution_id = std::nullopt,
                               .linked_by_job = job.ref.id,
                               .first_periodic_sync_in = settings_.periodic_sync_interval});
    }
    keys_.seal_secret(tx, token_context(tenant, secret_id, id, settings_.environment), linked.access_token, actor);
    append_connection_audit(tx, keys_, tenant, existing ? "connection.relinked" : "connection.linked", id,
                            json_object("item_id", linked.item_id));
    enqueue_sync(tx, tenant, id);
    db::append_external_calls(tx, tenant, calls);
    complete_in_or_throw(tx, context, job, queue::outcome::done());
    return id;
  });
}

// Stores what the exchange returned. Retrying the whole job cannot help once the token is spent
// (Plaid refuses a second exchange), so a database that is away for a moment is waited for here,
// bounded; a store that cannot be done removes the item at Plaid.
asio::awaitable<queue::outcome> plaid_jobs::store_link(queue::job job, job_context context,
                                                       plaid::exchange_result linked,
                                                       std::vector<db::external_call> calls) {
  const core::uuid tenant = job.ref.tenant;
  const core::uuid secret_id = crypto::random_uuid();
  std::optional<core::uuid> connection;
  std::optional<std::string> store_failure;
  for (std::uint32_t attempt = 1; !connection && !store_failure; ++attempt) {
    bool unreachable = false;
    try {
      connection = co_await context.run_db([&] { return store_connection(job, context, linked, secret_id, calls); });
    } catch (const pqxx::in_doubt_error&) {
      co_return queue::outcome::in_doubt("the link may have committed; the next attempt looks it up");
    } catch (const lease_lost_error&) {
      throw;  // the job boundary's (worker/dispatcher.cpp): not a store failure, the item stays
    } catch (const std::exception& error) {
      // Any failover symptom (a read-only server too, not only a lost connection) is waited out.
      if (!db::is_connection_problem(error) || attempt >= settings_.link_store_attempts_max || context.lease_lost()) {
        store_failure = one_line(error.what());
      } else {
        unreachable = true;
      }
    }
    if (unreachable) {
      log_.warn("plaid link: the database is unreachable; storing the new connection again shortly",
                {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"job", job.ref.id}, {"attempt", static_cast<std::int64_t>(attempt)}});
      asio::steady_timer timer(co_await asio::this_coro::executor);
      timer.expires_after(settings_.link_store_retry_delay);
      co_await timer.async_wait(asio::use_awaitable);
    }
  }
  if (store_failure) {
    // The token could not be stored, and the public token is spent: remove the item at Plaid so
    // no access token we do not hold stays alive, and ask the user to link again.
    log_.error("plaid link could not store the connection; removing the item at Plaid",
               {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"job", job.ref.id}, {"error", *store_failure}});
    const auto removed = co_await plaid_.remove_item(linked.access_token);
    count_call(removed.call, removed.ok() ? "ok" : plaid::to_string(removed.failure.kind));
    co_return queue::outcome::needs_user_action("could not store the new connection (" + *store_failure +
                                                "); the item was removed at Plaid; link again");
  }
  context.mark_completed();
  log_.info("plaid item linked",
            {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"connection", connection->to_string()}});
  co_return queue::outcome::done();
}

// plaid.sync: walk /transactions/sync from the stored cursor until has_more is false, buffering
// (bounded), then apply everything and the final cursor in one transaction with the completion.
asio::awaitable<queue::outcome> plaid_jobs::sync(queue::job job, job_context context) {
  const core::uuid tenant = job.ref.tenant;
  const std::optional<core::uuid> connection = payload_connection(job);
  if (!connection) co_return queue::outcome::failed_permanently("plaid.sync payload has no connection_id");
  if (paused()) co_return queue::outcome::retry("Plaid work paused: API keys rejected", settings_.credentials_pause);

  loaded_connection start = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      loaded_connection loaded;
      loaded.row = load_plaid_connection(tx, tenant, *connection, false);
      if (loaded.row && loaded.row->status == connection_status::active && loaded.row->token_secret) {
        loaded.token = open_token(tx, tenant, *loaded.row);
      }
      return loaded;
    });
  });
  if (!start.row) co_return queue::outcome::failed_permanently("connection " + connection->to_string() + " not found");
  if (start.row->status != connection_status::active) {
    // needs_reauth, broken, revoking, revoked: nothing to sync until someone acts.
    log_.info("plaid sync skipped", {{"kind", job.kind}, {"connection", connection->to_string()},
                                     {"status", std::string(to_string(start.row->status))}});
    co_return queue::outcome::done();
  }
  if (start.token.empty()) co_return queue::outcome::needs_user_action("the connection has no access token; link again");

  sync_walk walk = co_await walk_pages(job, context, *connection, start.token, start.row->cursor);
  start.token = crypto::secret{};  // zeroed: the token is not needed past the walk
  if (walk.stopped) co_return std::move(*walk.stopped);
  if (walk.failure) {
    co_return co_await finish_failure(std::move(job), context, *connection, std::move(*walk.failure), plaid_call::sync,
                                      std::move(walk.calls));
  }
  co_return co_await apply_walk(std::move(job), context, *connection, *start.row, std::move(walk));
}

// The walk: pages from `stored_cursor` until has_more is false, restarting from the walk's first
// cursor on a mutation during pagination and from the beginning on a cursor Plaid disowns.
asio::awaitable<plaid_jobs::sync_walk> plaid_jobs::walk_pages(const queue::job& job, const job_context& context,
                                                              core::uuid connection, const crypto::secret& token,
                                                              std::string stored_cursor) {
  sync_walk walk;
  walk.stored_cursor = stored_cursor;
  std::string walk_cursor = stored_cursor;  // where this walk began (a mutation restarts here)
  walk.cursor = walk_cursor;
  plaid::sync_buffer buffer(settings_.sync_rows_max);
  simdjson::ondemand::parser parser;
  for (;;) {
    if (context.lease_lost()) {
      walk.stopped = queue::outcome::retry("lease lost");
      co_return walk;
    }
    if (const auto later = co_await wait_for_sync_token(connection, context)) {
      walk.stopped = queue::outcome::retry("Plaid's /transactions/sync rate limit reached (shared limiter)", *later);
      co_return walk;
    }
    plaid::result<plaid::sync_page> page = co_await plaid_.sync_transactions(token, walk.cursor, parser);
    count_call(page.call, page.ok() ? "ok" : plaid::to_string(page.failure.kind));
    walk.calls.push_back(to_external_call("plaid", page.call));
    if (page.ok()) {
      const bool has_more = page.value->has_more;
      std::string next = page.value->next_cursor;
      if (!buffer.add_page(std::move(*page.value))) {
        walk.failure = plaid::error{};
        walk.failure->kind = plaid::error_class::response_invalid;
        walk.failure->message = "the sync buffered more than sync_rows_max (" + std::to_string(buffer.rows_max()) +
                                ") rows; raise the limit for this item";
        co_return walk;
      }
      walk.cursor = std::move(next);
      if (!has_more) break;
      continue;
    }
    if (page.failure.kind == plaid::error_class::mutation_during_pagination && walk.restarts < settings_.sync_restarts_max) {
      ++walk.restarts;
      buffer.clear();
      walk.cursor = walk_cursor;
      continue;
    }
    if (page.failure.kind == plaid::error_class::cursor_not_associated && !walk.cursor_reset) {
      log_.warn("plaid cursor not associated with the access token: syncing from the beginning",
                {{"kind", job.kind}, {"connection", connection.to_string()}});
      walk.cursor_reset = true;
      buffer.clear();
      walk_cursor.clear();
      walk.cursor.clear();
      continue;
    }
    walk.failure = std::move(page.failure);
    co_return walk;
  }
  walk.changes = buffer.take();
  co_return walk;
}

// One apply of a finished walk, with the job's completion: nothing when the connection left
// 'active' or its cursor moved while the walk ran.
queue::outcome plaid_jobs::apply_in(pqxx::work& tx, const queue::job& job, const job_context& context,
                                    const core::uuid& connection, const sync_walk& walk, bool first_sync,
                                    quarantine_counts& counted) {
  const core::uuid tenant = job.ref.tenant;
  counted = {};
  const auto now = load_plaid_connection(tx, tenant, connection, true);
  db::append_external_calls(tx, tenant, walk.calls);
  if (!now || now->status != connection_status::active) {
    // Revocation (or re-authentication) began while the walk ran: commit nothing of it.
    complete_in_or_throw(tx, context, job, queue::outcome::done());
    return queue::outcome::done();
  }
  if (now->cursor != walk.stored_cursor) {
    const queue::outcome moved = queue::outcome::retry("the connection's cursor moved during the walk");
    complete_in_or_throw(tx, context, job, moved);
    return moved;
  }
  // Read again under the row lock: another attempt's apply may have landed since the walk began.
  const std::optional<plaid::sync_changes> merged =
      with_released(tx, tenant, connection, walk, now->synced_before, counted);
  const plaid::sync_changes& changes = merged ? *merged : walk.changes;
  const apply_counts counts = apply_sync(tx, tenant, connection, changes, walk.cursor, first_sync && !now->synced_before);
  counted.quarantined = quarantine_rows(tx, tenant, connection, changes, now->synced_before);
  std::string details = "{\"added\":" + std::to_string(changes.added) +
                        ",\"modified\":" + std::to_string(changes.modified) +
                        ",\"removed\":" + std::to_string(changes.removed) +
                        ",\"upserted\":" + std::to_string(counts.upserted) +
                        ",\"tombstoned\":" + std::to_string(counts.tombstoned) +
                        ",\"quarantined\":" + std::to_string(counted.quarantined) +
                        ",\"released\":" + std::to_string(counted.released) +
                        ",\"restarts\":" + std::to_string(walk.restarts) + ",\"from_beginning\":" +
                        (walk.cursor_reset || walk.stored_cursor.empty() ? "true" : "false") + "}";
  append_connection_audit(tx, keys_, tenant, "connection.synced", connection, std::move(details));
  complete_in_or_throw(tx, context, job, queue::outcome::done());
  return queue::outcome::done();
}

std::optional<plaid::sync_changes> plaid_jobs::with_released(pqxx::work& tx, const core::uuid& tenant,
                                                             const core::uuid& connection, const sync_walk& walk,
                                                             bool synced_before, quarantine_counts& counted) {
  const bool walk_set_aside_currency =
      std::any_of(walk.changes.rejected.begin(), walk.changes.rejected.end(), [](const plaid::rejected_row& row) {
        return row.reason == plaid::rejection_reason::unknown_currency;
      });
  // A connection that never synced has no quarantine yet.
  std::vector<quarantined_row> waiting =
      synced_before ? releasable_quarantine(tx, tenant, connection) : std::vector<quarantined_row>{};
  if (waiting.empty() && !walk_set_aside_currency) return std::nullopt;
  // The worker's currency table was read at start; a currency may have been declared since, so
  // this apply reads the table again.
  const core::currency_table currencies = db::load_currencies(tx);
  plaid::sync_changes merged = walk.changes;
  // This walk's own rows in a currency declared since the worker started are read again too, in
  // place of an older quarantined copy of the same row.
  std::erase_if(merged.rejected, [&](plaid::rejected_row& row) {
    if (row.reason != plaid::rejection_reason::unknown_currency || !row.currency) return false;
    if (currencies.find(*row.currency) == nullptr) return false;
    std::erase_if(waiting, [&](const quarantined_row& stored) {
      return stored.kind == row.kind && stored.plaid_id == row.plaid_id;
    });
    waiting.push_back({row.kind, row.plaid_id, std::move(row.raw_json)});
    return true;
  });
  if (waiting.empty()) return std::nullopt;
  thread_local simdjson::ondemand::parser parser;
  plaid::sync_page released;
  for (const quarantined_row& row : waiting) {
    plaid::page_result read = plaid::parse_quarantined_row(parser, row.kind, row.raw_json, currencies);
    if (!read.ok) {
      // Malformed apart from its money: it stays quarantined for a person (connections list).
      log_.warn("plaid quarantined row cannot be read again; it stays quarantined",
                {{"tenant", tenant.to_string()}, {"connection", connection.to_string()}, {"error", read.error}});
      continue;
    }
    counted.released += read.page.added.size() + read.page.accounts.size();
    for (plaid::transaction& added : read.page.added) released.added.push_back(std::move(added));
    for (plaid::account& account : read.page.accounts) released.accounts.push_back(std::move(account));
    for (plaid::rejected_row& again : read.page.rejected) released.rejected.push_back(std::move(again));
  }
  plaid::fold_released(merged, std::move(released));
  return merged;
}

// Applies the walk. A connection that never synced gets plain inserts (apply_sync); should a row
// exist after all, the apply runs again with the upsert.
asio::awaitable<queue::outcome> plaid_jobs::apply_walk(queue::job job, job_context context, core::uuid connection,
                                                       plaid_connection start, sync_walk walk) {
  const core::uuid tenant = job.ref.tenant;
  bool first_sync = !start.synced_before;
  quarantine_counts counted;
  const auto apply = [&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      return apply_in(tx, job, context, connection, walk, first_sync, counted);
    });
  };
  try {
    queue::outcome result;
    try {
      result = co_await context.run_db(apply);
    } catch (const pqxx::unique_violation&) {
      first_sync = false;
    }
    if (!first_sync && !start.synced_before) result = co_await context.run_db(apply);
    context.mark_completed();
    rows_added_->fetch_add(walk.changes.added, std::memory_order_relaxed);
    rows_modified_->fetch_add(walk.changes.modified, std::memory_order_relaxed);
    rows_removed_->fetch_add(walk.changes.removed, std::memory_order_relaxed);
    rows_quarantined_->fetch_add(counted.quarantined, std::memory_order_relaxed);
    rows_released_->fetch_add(counted.released, std::memory_order_relaxed);
    co_return result;
  } catch (const pqxx::in_doubt_error&) {
    // The cursor moves with the rows: the next attempt starts from whichever cursor committed.
    co_return queue::outcome::in_doubt("the sync's commit may have landed; the next attempt resumes from the stored cursor");
  }
}

// A call that ended in a Plaid error: the outcome plan_failure maps it to, the connection's state
// changes it calls for, the call log and the job's outcome, in one transaction.
asio::awaitable<queue::outcome> plaid_jobs::finish_failure(queue::job job, job_context context,
                                                           std::optional<core::uuid> connection, plaid::error failure,
                                                           plaid_call call, std::vector<db::external_call> calls) {
  const core::uuid tenant = job.ref.tenant;
  const failure_plan plan = plan_failure(failure, call, delays(), job.attempt >= job.attempts_max);
  log_failure(job, connection, failure, call, plan);
  co_await context.run_db([&] {
    db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      db::append_external_calls(tx, tenant, calls);
      if (connection) apply_failure_plan(tx, tenant, *connection, failure, call, plan);
      complete_in_or_throw(tx, context, job, plan.outcome);
    });
  });
  context.mark_completed();
  co_return plan.outcome;
}

plaid::failure_delays plaid_jobs::delays() const {
  return {.rate_limited_retry = settings_.rate_limited_retry,
          .institution_down_retry = settings_.institution_down_retry,
          .credentials_pause = settings_.credentials_pause};
}

// The connection's side of a failure plan, in the job's transaction.
void plaid_jobs::apply_failure_plan(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                                    const plaid::error& failure, plaid_call call, const failure_plan& plan) {
  const auto now = load_plaid_connection(tx, tenant, connection, true);
  if (!now) return;
  if (call == plaid_call::remove) {
    // The token stays sealed and the connection 'revoking'; Plaid's answer is its last error
    // (connections list shows it).
    if (now->status == connection_status::revoking) {
      set_connection_status(tx, tenant, connection, connection_status::revoking, plan.connection_error);
    }
    return;
  }
  if (plan.new_status && now->status == connection_status::active) {
    set_connection_status(tx, tenant, connection, *plan.new_status, plan.connection_error);
    append_connection_audit(tx, keys_, tenant, "connection." + std::string(to_string(*plan.new_status)), connection,
                            json_object("error_code", failure.error_code));
  }
  if (plan.revoke && now->status != connection_status::revoked) enqueue_revoke(tx, tenant, connection);
}

// The failure's log lines, and the pause a refused API key starts.
void plaid_jobs::log_failure(const queue::job& job, const std::optional<core::uuid>& connection,
                             const plaid::error& failure, plaid_call call, const failure_plan& plan) {
  const std::string connection_text = connection ? connection->to_string() : std::string("-");
  if (plan.pause) {
    paused_.store(true);
    log_.error("Plaid rejected the API keys: Plaid work paused", {{"kind", job.kind}, {"job", job.ref.id}});
  }
  if (plan.new_status == connection_status::broken) {
    log_.error("Plaid no longer accepts a connection's access token: connection marked broken",
               {{"kind", job.kind}, {"tenant", job.ref.tenant.to_string()}, {"connection", connection_text}});
  }
  const char* message = call == plaid_call::exchange ? "plaid link failed"
                        : call == plaid_call::sync   ? "plaid sync failed"
                                                     : "plaid revocation waits: Plaid has not confirmed the removal";
  log_.warn(message, {{"kind", job.kind}, {"tenant", job.ref.tenant.to_string()}, {"connection", connection_text},
                      {"job", job.ref.id}, {"attempt", static_cast<std::int64_t>(job.attempt)},
                      {"error", describe(failure)}});
}

// plaid.revoke: mark the connection revoking (running syncs stop before their commit), cancel its
// waiting jobs, call /item/remove, and once Plaid confirmed (or said the item is gone) shred the
// token and mark it revoked, audited.
asio::awaitable<queue::outcome> plaid_jobs::revoke(queue::job job, job_context context) {
  const core::uuid tenant = job.ref.tenant;
  const std::optional<core::uuid> connection = payload_connection(job);
  if (!connection) co_return queue::outcome::failed_permanently("plaid.revoke payload has no connection_id");

  loaded_connection start = co_await context.run_db([&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) { return begin_revoke(tx, job, context, *connection); });
  });
  if (!start.row) co_return queue::outcome::failed_permanently("connection " + connection->to_string() + " not found");
  if (start.row->status == connection_status::revoked) {
    context.mark_completed();
    co_return queue::outcome::done();
  }

  std::vector<db::external_call> calls;
  std::string plaid_answer = "no token held";
  if (!start.token.empty()) {
    if (paused()) co_return queue::outcome::retry("Plaid work paused: API keys rejected", settings_.credentials_pause);
    plaid::result<plaid::remove_result> removed = co_await plaid_.remove_item(start.token);
    count_call(removed.call, removed.ok() ? "ok" : plaid::to_string(removed.failure.kind));
    calls.push_back(to_external_call("plaid", removed.call));
    start.token = crypto::secret{};
    plaid_answer = removed.ok() ? "removed" : "already removed";
    // Removed, or the item no longer exists at Plaid: either way nothing can use the token.
    const bool gone = removed.ok() || removed.failure.kind == plaid::error_class::item_gone ||
                      removed.failure.kind == plaid::error_class::invalid_access_token;
    if (!gone) {
      co_return co_await finish_failure(std::move(job), context, *connection, std::move(removed.failure),
                                        plaid_call::remove, std::move(calls));
    }
  }

  co_await context.run_db([&] {
    db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
      const auto now = load_plaid_connection(tx, tenant, *connection, true);
      if (now && now->token_secret) keys_.shred_secret(tx, tenant, *now->token_secret, actor);
      mark_revoked(tx, tenant, *connection);
      cancel_connection_jobs(tx, tenant, *connection, job.ref.id);
      db::append_external_calls(tx, tenant, calls);
      append_connection_audit(tx, keys_, tenant, "connection.revoked", *connection, json_object("plaid", plaid_answer));
      complete_in_or_throw(tx, context, job, queue::outcome::done());
    });
  });
  context.mark_completed();
  log_.info("plaid connection revoked", {{"kind", job.kind}, {"tenant", tenant.to_string()},
                                         {"connection", connection->to_string()}, {"plaid", plaid_answer}});
  co_return queue::outcome::done();
}

// The revocation's first transaction: the connection locked and marked revoking (audited once),
// its waiting jobs cancelled, its token opened for /item/remove. A connection already revoked
// completes the job here.
plaid_jobs::loaded_connection plaid_jobs::begin_revoke(pqxx::work& tx, const queue::job& job,
                                                       const job_context& context, const core::uuid& connection) {
  const core::uuid tenant = job.ref.tenant;
  loaded_connection loaded;
  loaded.row = load_plaid_connection(tx, tenant, connection, true);
  if (!loaded.row) return loaded;
  if (loaded.row->status == connection_status::revoked) {
    complete_in_or_throw(tx, context, job, queue::outcome::done());
    return loaded;
  }
  if (loaded.row->status != connection_status::revoking) {
    set_connection_status(tx, tenant, connection, connection_status::revoking, std::nullopt);
    append_connection_audit(tx, keys_, tenant, "connection.revoking", connection, "{}");
  }
  cancel_connection_jobs(tx, tenant, connection, job.ref.id);
  if (loaded.row->token_secret) loaded.token = open_token(tx, tenant, *loaded.row);
  return loaded;
}

crypto::secret plaid_jobs::open_token(pqxx::work& tx, const core::uuid& tenant, const plaid_connection& row) {
  return keys_.open_secret(tx, token_context(tenant, *row.token_secret, row.connection, row.environment));
}

}  // namespace bankworker::plaid
