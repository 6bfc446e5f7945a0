#include "connectors/plaid/jobs.hpp"

#include "service/external_calls.hpp"

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
constexpr const char* request_sync_sql = "SELECT bankworker.enqueue_sync_request($1::uuid, $2::uuid)";
constexpr const char* request_revoke_sql = "SELECT bankworker.enqueue_revoke_request($1::uuid, $2::uuid)";
constexpr const char* cancel_connection_sql = "SELECT bankworker.cancel_connection_jobs($1::uuid, $2::uuid, $3::bigint)";

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

// What Plaid said, for a job's last error and the logs: class, code, message (redacted by the
// client), never a token.
std::string describe(const plaid::error& failure) {
  std::string text(plaid::to_string(failure.kind));
  if (!failure.error_code.empty()) text += " " + failure.error_code;
  if (failure.http_status > 0) text += " (HTTP " + std::to_string(failure.http_status) + ")";
  if (!failure.message.empty()) text += ": " + failure.message;
  return text;
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
        const auto found = plaid::connection_linked_by_job(tx, tenant, job.ref.id);
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
    const plaid::error& failure = exchanged.failure;
    const std::string reason = describe(failure);
    log_.warn("plaid link failed",
              {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"job", job.ref.id}, {"error", reason}});
    queue::outcome result = queue::outcome::failed_permanently(reason);
    switch (failure.kind) {
      case plaid::error_class::rate_limited:
        result = queue::outcome::retry(reason, std::max(failure.retry_after, settings_.rate_limited_retry));
        break;
      case plaid::error_class::transient: result = queue::outcome::retry(reason); break;
      case plaid::error_class::institution_down:
        result = queue::outcome::retry(reason, settings_.institution_down_retry);
        break;
      case plaid::error_class::invalid_api_keys:
        paused_.store(true);
        log_.error("Plaid rejected the API keys: Plaid work paused", {{"kind", job.kind}, {"job", job.ref.id}});
        result = queue::outcome::retry(reason, settings_.credentials_pause);
        break;
      case plaid::error_class::invalid_public_token:
        result = queue::outcome::needs_user_action(reason + "; the user must link the bank again");
        break;
      default: break;
    }
    const queue::outcome recorded = result;
    co_await context.run_db([&] {
      db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        db::append_external_calls(tx, tenant, calls);
        complete_in_or_throw(tx, context, job, recorded);
      });
    });
    context.mark_completed();
    co_return result;
  }

  plaid::exchange_result& linked = *exchanged.value;
  const core::uuid secret_id = crypto::random_uuid();
  std::optional<core::uuid> connection;
  std::optional<std::string> store_failure;
  const auto store = [&] {
    return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> core::uuid {
      std::optional<core::uuid> existing = plaid::find_connection_by_item(tx, tenant, linked.item_id);
      core::uuid id = existing.value_or(crypto::random_uuid());
      if (existing) {
        // Linking an item again (Link's update mode): the new token replaces the old one.
        const auto current = plaid::load_plaid_connection(tx, tenant, id, true);
        if (current && current->token_secret) keys_.shred_secret(tx, tenant, *current->token_secret, actor);
        plaid::set_connection_status(tx, tenant, id, "active", std::nullopt);
      } else {
        plaid::insert_plaid_connection(tx, tenant,
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
      tx.exec_params(request_sync_sql, tenant.to_string(), id.to_string());
      db::append_external_calls(tx, tenant, calls);
      complete_in_or_throw(tx, context, job, queue::outcome::done());
      return id;
    });
  };
  // Retrying the whole job cannot help once the token is spent (Plaid refuses a second exchange),
  // so a database that is away for a moment is waited for here, bounded.
  for (std::uint32_t attempt = 1; !connection && !store_failure; ++attempt) {
    bool unreachable = false;
    try {
      connection = co_await context.run_db(store);
    } catch (const pqxx::in_doubt_error&) {
      co_return queue::outcome::in_doubt("the link may have committed; the next attempt looks it up");
    } catch (const lease_lost_error&) {
      co_return queue::outcome::retry("lease lost");
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

namespace {

// The connection and its opened token, read at the start of a sync or a revocation.
struct loaded_connection {
  std::optional<plaid::plaid_connection> row;
  crypto::secret token;
};

}  // namespace

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
      loaded.row = plaid::load_plaid_connection(tx, tenant, *connection, false);
      if (loaded.row && loaded.row->status == "active" && loaded.row->token_secret) {
        loaded.token = keys_.open_secret(
            tx, token_context(tenant, *loaded.row->token_secret, *connection, loaded.row->environment));
      }
      return loaded;
    });
  });
  if (!start.row) co_return queue::outcome::failed_permanently("connection " + connection->to_string() + " not found");
  if (start.row->status != "active") {
    // needs_reauth, broken, revoking, revoked: nothing to sync until someone acts.
    log_.info("plaid sync skipped",
              {{"kind", job.kind}, {"connection", connection->to_string()}, {"status", start.row->status}});
    co_return queue::outcome::done();
  }
  if (start.token.empty()) co_return queue::outcome::needs_user_action("the connection has no access token; link again");

  const std::string stored_cursor = start.row->cursor;
  std::string walk_cursor = stored_cursor;  // where this walk began (a mutation restarts here)
  std::string cursor = walk_cursor;
  bool cursor_reset = false;
  std::uint32_t restarts = 0;
  plaid::sync_buffer buffer(settings_.sync_rows_max);
  simdjson::ondemand::parser parser;
  std::vector<db::external_call> calls;
  std::optional<plaid::error> failure;
  for (;;) {
    if (context.lease_lost()) co_return queue::outcome::retry("lease lost");
    if (const auto later = co_await wait_for_sync_token(*connection, context)) {
      co_return queue::outcome::retry("Plaid's /transactions/sync rate limit reached (shared limiter)", *later);
    }
    plaid::result<plaid::sync_page> page = co_await plaid_.sync_transactions(start.token, cursor, parser);
    count_call(page.call, page.ok() ? "ok" : plaid::to_string(page.failure.kind));
    calls.push_back(to_external_call("plaid", page.call));
    if (page.ok()) {
      const bool has_more = page.value->has_more;
      std::string next = page.value->next_cursor;
      if (!buffer.add_page(std::move(*page.value))) {
        failure = plaid::error{};
        failure->kind = plaid::error_class::response_invalid;
        failure->message = "the sync buffered more than sync_rows_max (" + std::to_string(buffer.rows_max()) +
                           ") rows; raise the limit for this item";
        break;
      }
      cursor = std::move(next);
      if (!has_more) break;
      continue;
    }
    if (page.failure.kind == plaid::error_class::mutation_during_pagination && restarts < settings_.sync_restarts_max) {
      ++restarts;
      buffer.clear();
      cursor = walk_cursor;
      continue;
    }
    if (page.failure.kind == plaid::error_class::cursor_not_associated && !cursor_reset) {
      log_.warn("plaid cursor not associated with the access token: syncing from the beginning",
                {{"kind", job.kind}, {"connection", connection->to_string()}});
      cursor_reset = true;
      buffer.clear();
      walk_cursor.clear();
      cursor.clear();
      continue;
    }
    failure = std::move(page.failure);
    break;
  }
  start.token = crypto::secret{};  // zeroed: the token is not needed past the walk

  if (failure) co_return co_await finish_sync_failure(job, context, *connection, *failure, std::move(calls));

  plaid::sync_changes changes = buffer.take();
  // A connection that never synced gets plain inserts (plaid::apply_sync); should a row exist after
  // all, the apply runs again with the upsert.
  bool first_sync = !start.row->synced_before;
  try {
    const auto apply = [&] {
      return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) -> queue::outcome {
        const auto now = plaid::load_plaid_connection(tx, tenant, *connection, true);
        db::append_external_calls(tx, tenant, calls);
        if (!now || now->status != "active") {
          // Revocation (or re-authentication) began while the walk ran: commit nothing of it.
          const queue::outcome stopped = queue::outcome::done();
          complete_in_or_throw(tx, context, job, stopped);
          return stopped;
        }
        if (now->cursor != stored_cursor) {
          const queue::outcome moved = queue::outcome::retry("the connection's cursor moved during the walk");
          complete_in_or_throw(tx, context, job, moved);
          return moved;
        }
        // Read again under the row lock: another attempt's apply may have landed since the walk began.
        const plaid::apply_counts counts =
            plaid::apply_sync(tx, tenant, *connection, changes, cursor, first_sync && !now->synced_before);
        std::string details = "{\"added\":" + std::to_string(changes.added) +
                              ",\"modified\":" + std::to_string(changes.modified) +
                              ",\"removed\":" + std::to_string(changes.removed) +
                              ",\"upserted\":" + std::to_string(counts.upserted) +
                              ",\"tombstoned\":" + std::to_string(counts.tombstoned) +
                              ",\"restarts\":" + std::to_string(restarts) +
                              ",\"from_beginning\":" + (cursor_reset || stored_cursor.empty() ? "true" : "false") + "}";
        append_connection_audit(tx, keys_, tenant, "connection.synced", *connection, std::move(details));
        complete_in_or_throw(tx, context, job, queue::outcome::done());
        return queue::outcome::done();
      });
    };
    queue::outcome result;
    try {
      result = co_await context.run_db(apply);
    } catch (const pqxx::unique_violation&) {
      first_sync = false;
    }
    if (!first_sync && !start.row->synced_before) result = co_await context.run_db(apply);
    context.mark_completed();
    rows_added_->fetch_add(changes.added, std::memory_order_relaxed);
    rows_modified_->fetch_add(changes.modified, std::memory_order_relaxed);
    rows_removed_->fetch_add(changes.removed, std::memory_order_relaxed);
    co_return result;
  } catch (const pqxx::in_doubt_error&) {
    // The cursor moves with the rows: the next attempt starts from whichever cursor committed.
    co_return queue::outcome::in_doubt("the sync's commit may have landed; the next attempt resumes from the stored cursor");
  } catch (const lease_lost_error&) {
    co_return queue::outcome::retry("lease lost");
  }
}

// A walk that ended in a Plaid error: the connection's state changes the error calls for, the
// call log, and the job's outcome, in one transaction.
asio::awaitable<queue::outcome> plaid_jobs::finish_sync_failure(queue::job job, job_context context,
                                                                core::uuid connection, plaid::error failure,
                                                                std::vector<db::external_call> calls) {
  const core::uuid tenant = job.ref.tenant;
  const std::string reason = describe(failure);
  std::optional<std::string> new_status;
  bool revoke = false;
  queue::outcome result = queue::outcome::failed_permanently(reason);
  switch (failure.kind) {
    case plaid::error_class::rate_limited:
      result = queue::outcome::retry(reason, std::max(failure.retry_after, settings_.rate_limited_retry));
      break;
    case plaid::error_class::transient:
    case plaid::error_class::mutation_during_pagination:  // restarts exhausted: later, from the stored cursor
      result = queue::outcome::retry(reason);
      break;
    case plaid::error_class::institution_down:
      result = queue::outcome::retry(reason, settings_.institution_down_retry);
      break;
    case plaid::error_class::needs_reauth:
      new_status = "needs_reauth";
      result = queue::outcome::needs_user_action(reason + "; the user must re-authenticate in Link");
      break;
    case plaid::error_class::item_gone:
      revoke = true;
      result = queue::outcome::failed_permanently(reason + "; the connection is being revoked");
      break;
    case plaid::error_class::invalid_access_token:
      new_status = "broken";
      log_.error("Plaid no longer accepts a connection's access token: connection marked broken",
                 {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"connection", connection.to_string()}});
      break;
    case plaid::error_class::invalid_api_keys:
      paused_.store(true);
      log_.error("Plaid rejected the API keys: Plaid work paused", {{"kind", job.kind}, {"job", job.ref.id}});
      result = queue::outcome::retry(reason, settings_.credentials_pause);
      break;
    case plaid::error_class::cursor_not_associated:
    case plaid::error_class::invalid_public_token:
    case plaid::error_class::invalid_request:
    case plaid::error_class::response_invalid:
    case plaid::error_class::refused:
      break;
  }
  log_.warn("plaid sync failed",
            {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"connection", connection.to_string()},
                                  {"job", job.ref.id}, {"error", reason}});
  try {
    co_await context.run_db([&] {
      db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        db::append_external_calls(tx, tenant, calls);
        const auto now = plaid::load_plaid_connection(tx, tenant, connection, true);
        if (new_status && now && now->status == "active") {
          plaid::set_connection_status(tx, tenant, connection, *new_status, reason);
          append_connection_audit(tx, keys_, tenant, "connection." + *new_status, connection,
                                  json_object("error_code", failure.error_code));
        }
        if (revoke && now && now->status != "revoked") {
          tx.exec_params(request_revoke_sql, tenant.to_string(), connection.to_string());
        }
        complete_in_or_throw(tx, context, job, result);
      });
    });
  } catch (const lease_lost_error&) {
    co_return queue::outcome::retry("lease lost");
  }
  context.mark_completed();
  co_return result;
}

// Plaid did not confirm the removal: the token stays sealed and the connection 'revoking'; the
// answer is recorded on the connection (connections list shows it) with the job's retry, in one
// transaction.
asio::awaitable<queue::outcome> plaid_jobs::finish_revoke_unconfirmed(queue::job job, job_context context,
                                                                      core::uuid connection, plaid::error failure,
                                                                      std::vector<db::external_call> calls) {
  const core::uuid tenant = job.ref.tenant;
  const std::string reason = "Plaid has not confirmed /item/remove: " + describe(failure);
  std::chrono::milliseconds delay{0};  // the queue's capped exponential backoff
  if (failure.kind == plaid::error_class::rate_limited) delay = std::max(failure.retry_after, settings_.rate_limited_retry);
  if (failure.kind == plaid::error_class::institution_down) delay = settings_.institution_down_retry;
  if (failure.kind == plaid::error_class::invalid_api_keys) {
    paused_.store(true);
    delay = settings_.credentials_pause;
  }
  const queue::outcome result =
      job.attempt >= job.attempts_max
          ? queue::outcome::needs_user_action(reason + "; the connection stays revoking with its token sealed: run"
                                                       " `connections revoke` again once Plaid accepts the removal")
          : queue::outcome::retry(reason + "; the token stays sealed until Plaid confirms", delay);
  log_.warn("plaid revocation waits: Plaid has not confirmed the removal",
            {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"connection", connection.to_string()}, {"job", job.ref.id},
             {"attempt", static_cast<std::int64_t>(job.attempt)}, {"error", describe(failure)}});
  try {
    co_await context.run_db([&] {
      db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        db::append_external_calls(tx, tenant, calls);
        const auto now = plaid::load_plaid_connection(tx, tenant, connection, true);
        if (now && now->status == "revoking") plaid::set_connection_status(tx, tenant, connection, "revoking", reason);
        complete_in_or_throw(tx, context, job, result);
      });
    });
  } catch (const lease_lost_error&) {
    co_return queue::outcome::retry("lease lost");
  }
  context.mark_completed();
  co_return result;
}

// plaid.revoke: mark the connection revoking (running syncs stop before their commit), cancel its
// waiting jobs, call /item/remove, and once Plaid confirmed (or said the item is gone) shred the
// token and mark it revoked, audited.
asio::awaitable<queue::outcome> plaid_jobs::revoke(queue::job job, job_context context) {
  const core::uuid tenant = job.ref.tenant;
  const std::optional<core::uuid> connection = payload_connection(job);
  if (!connection) co_return queue::outcome::failed_permanently("plaid.revoke payload has no connection_id");

  loaded_connection start;
  try {
    start = co_await context.run_db([&] {
      return db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        loaded_connection loaded;
        loaded.row = plaid::load_plaid_connection(tx, tenant, *connection, true);
        if (!loaded.row) return loaded;
        if (loaded.row->status == "revoked") {
          complete_in_or_throw(tx, context, job, queue::outcome::done());
          return loaded;
        }
        if (loaded.row->status != "revoking") {
          plaid::set_connection_status(tx, tenant, *connection, "revoking", std::nullopt);
          append_connection_audit(tx, keys_, tenant, "connection.revoking", *connection, "{}");
        }
        tx.exec_params(cancel_connection_sql, tenant.to_string(), connection->to_string(), job.ref.id);
        if (loaded.row->token_secret) {
          loaded.token = keys_.open_secret(
              tx, token_context(tenant, *loaded.row->token_secret, *connection, loaded.row->environment));
        }
        return loaded;
      });
    });
  } catch (const lease_lost_error&) {
    co_return queue::outcome::retry("lease lost");
  }
  if (!start.row) co_return queue::outcome::failed_permanently("connection " + connection->to_string() + " not found");
  if (start.row->status == "revoked") {
    context.mark_completed();
    co_return queue::outcome::done();
  }

  std::vector<db::external_call> calls;
  std::string plaid_answer = "no token held";
  if (!start.token.empty()) {
    if (paused()) co_return queue::outcome::retry("Plaid work paused: API keys rejected", settings_.credentials_pause);
    const plaid::result<plaid::remove_result> removed = co_await plaid_.remove_item(start.token);
    count_call(removed.call, removed.ok() ? "ok" : plaid::to_string(removed.failure.kind));
    calls.push_back(to_external_call("plaid", removed.call));
    start.token = crypto::secret{};
    if (removed.ok()) {
      plaid_answer = "removed";
    } else {
      const plaid::error& failure = removed.failure;
      const bool gone = failure.kind == plaid::error_class::item_gone ||
                        failure.kind == plaid::error_class::invalid_access_token;
      if (!gone) co_return co_await finish_revoke_unconfirmed(std::move(job), context, *connection, failure, std::move(calls));
      plaid_answer = "already removed";
    }
  }

  try {
    co_await context.run_db([&] {
      db::with_tenant(connections_, tenant, [&](pqxx::work& tx) {
        const auto now = plaid::load_plaid_connection(tx, tenant, *connection, true);
        if (now && now->token_secret) keys_.shred_secret(tx, tenant, *now->token_secret, actor);
        plaid::mark_revoked(tx, tenant, *connection);
        tx.exec_params(cancel_connection_sql, tenant.to_string(), connection->to_string(), job.ref.id);
        db::append_external_calls(tx, tenant, calls);
        append_connection_audit(tx, keys_, tenant, "connection.revoked", *connection, json_object("plaid", plaid_answer));
        complete_in_or_throw(tx, context, job, queue::outcome::done());
      });
    });
  } catch (const lease_lost_error&) {
    co_return queue::outcome::retry("lease lost");
  }
  context.mark_completed();
  log_.info("plaid connection revoked",
            {{"kind", job.kind}, {"tenant", tenant.to_string()}, {"connection", connection->to_string()},
                                         {"plaid", plaid_answer}});
  co_return queue::outcome::done();
}

}  // namespace bankworker::plaid
