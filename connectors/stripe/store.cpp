#include "connectors/stripe/store.hpp"

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "crypto/random.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::stripe {

namespace {

constexpr db::statement tenant_exists_sql{"stripe_tenant_exists",
    "SELECT count(*) FROM bankworker.tenants WHERE status = 'active'"};
constexpr db::statement webhook_secret_ids_sql{"stripe_webhook_secret_ids",
   
    "SELECT secret_id::text FROM bankworker.sealed_secrets WHERE purpose = 'stripe.webhook_secret'"
    " AND subject_id = $1 ORDER BY created_at DESC LIMIT $2"};
constexpr db::statement webhook_secret_infos_sql{"stripe_webhook_secret_infos",
   
    "SELECT secret_id::text, to_char(created_at AT TIME ZONE 'UTC', $3), to_char(rewrapped_at AT TIME ZONE 'UTC', $3),"
    " kek_version FROM bankworker.sealed_secrets WHERE purpose = 'stripe.webhook_secret' AND subject_id = $1"
    " ORDER BY created_at DESC LIMIT $2"};
constexpr db::statement is_webhook_secret_sql{"stripe_is_webhook_secret",
   
    "SELECT 1 FROM bankworker.sealed_secrets WHERE secret_id = $1::text::uuid AND purpose = 'stripe.webhook_secret'"};
constexpr db::statement load_event_sql{"stripe_load_event",
    "SELECT body, state, settlement_awaited_since IS NOT NULL FROM bankworker.stripe_events WHERE event_id = $1"};
constexpr db::statement load_events_sql{"stripe_load_events",
    "SELECT event_id, body, state, settlement_awaited_since IS NOT NULL FROM bankworker.stripe_events"
    " WHERE event_id = ANY($1::text[])"};
constexpr db::statement lock_account_sql{"stripe_lock_account",
   
    "SELECT pg_advisory_xact_lock(bankworker.stripe_account_lock_key($1))"};
constexpr db::statement account_tenant_sql{"stripe_account_tenant",
   
    "SELECT bankworker.stripe_account_tenant($1) = nullif(current_setting('bankworker.tenant_id', true), '')::uuid"};
constexpr db::statement insert_account_sql{"stripe_insert_account",
   
    "INSERT INTO bankworker.stripe_accounts (tenant_id, account)"
    " VALUES (nullif(current_setting('bankworker.tenant_id', true), '')::uuid, $1)"};
constexpr db::statement move_unrouted_sql{"stripe_move_unrouted",
   
    "WITH moved AS ("
    "  DELETE FROM bankworker.stripe_unrouted_events u"
    "   USING (SELECT event_id FROM bankworker.stripe_unrouted_events WHERE account = $1"
    "           ORDER BY created_at, event_id LIMIT $2) picked"
    "   WHERE u.event_id = picked.event_id"
    "  RETURNING u.event_id, u.type, u.account, u.livemode, u.created_at, u.received_at, u.body),"
    " stored AS ("
    "  INSERT INTO bankworker.stripe_events (tenant_id, event_id, type, account, livemode, created_at, received_at, body)"
    "  SELECT nullif(current_setting('bankworker.tenant_id', true), '')::uuid, m.event_id, m.type, m.account,"
    "         m.livemode, m.created_at, m.received_at, m.body FROM moved m"
    "  ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id)"
    " SELECT s.event_id FROM stored s JOIN moved m USING (event_id) ORDER BY m.created_at, m.event_id"};
constexpr db::statement api_key_ids_sql{"stripe_api_key_ids",
   
    "SELECT secret_id::text FROM bankworker.sealed_secrets WHERE purpose = 'stripe.api_key' AND subject_id = $1"
    " ORDER BY created_at DESC, secret_id LIMIT $2"};
// One unique-index probe per key (the LATERAL's LIMIT keeps it a nested loop): `= ANY($1)` let the
// planner, on statistics from when the journal was small, read the tenant's whole range of the
// index and filter it for the keys (6.5 ms for 80 keys under webhook_load, against 0.4 ms).
constexpr db::statement existing_entries_sql{"stripe_existing_entries",
    "SELECT k.key FROM unnest($1::text[]) AS k(key)"
    " CROSS JOIN LATERAL (SELECT 1 FROM bankworker.journal_entries e WHERE e.idempotency_key = k.key LIMIT 1) found"};
constexpr db::statement load_event_cursor_sql{"stripe_load_event_cursor",
   
    "SELECT last_event_id FROM bankworker.stripe_event_cursors WHERE scope = $1"};
constexpr db::statement save_event_cursor_sql{"stripe_save_event_cursor",
   
    "INSERT INTO bankworker.stripe_event_cursors (tenant_id, scope, last_event_id, recovered_total)"
    " VALUES (current_setting('bankworker.tenant_id')::uuid, $1, $2, $3)"
    " ON CONFLICT (tenant_id, scope) DO UPDATE SET last_event_id = excluded.last_event_id,"
    " recovered_total = bankworker.stripe_event_cursors.recovered_total + excluded.recovered_total, updated_at = now()"};
constexpr db::statement delete_event_cursor_sql{"stripe_delete_event_cursor",
    "DELETE FROM bankworker.stripe_event_cursors WHERE scope = $1"};
constexpr db::statement connected_accounts_sql{"stripe_connected_accounts",
   
    "SELECT account FROM bankworker.stripe_accounts ORDER BY account LIMIT $1"};
constexpr db::statement schedule_stripe_recovery_sql{"stripe_schedule_stripe_recovery",
    "SELECT bankworker.schedule_stripe_recovery($1, $2)"};
// A tenant has one key; more rows than this can only come from a race of two `key set`s, and the
// next `key set` shreds them all.
constexpr long api_key_rows_max = 16;

}  // namespace

bool tenant_exists(pqxx::transaction_base& tx) { return db::exec_statement1(tx, tenant_exists_sql)[0].as<int>() > 0; }

core::uuid add_webhook_secret(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const crypto::secret& secret,
                              std::string_view actor) {
  const core::uuid id = crypto::random_uuid();
  keys.seal_secret(tx,
                   {.purpose = crypto::secret_purpose::stripe_webhook_secret,
                    .tenant = tenant,
                    .secret_id = id,
                    .subject_id = std::string(stripe_endpoint_subject),
                    .environment = {}},
                   secret, actor);
  return id;
}

bool remove_webhook_secret(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const core::uuid& secret_id,
                           std::string_view actor) {
  if (db::exec_statement(tx, is_webhook_secret_sql, secret_id.to_string()).empty()) return false;
  return keys.shred_secret(tx, tenant, secret_id, actor);
}

std::vector<webhook_secret_info> list_webhook_secrets(pqxx::transaction_base& tx) {
  std::vector<webhook_secret_info> secrets;
  const auto rows = db::exec_statement(tx, webhook_secret_infos_sql, std::string(stripe_endpoint_subject),
                                   static_cast<long>(limits::stripe_endpoint_secrets_max),
                                   "YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"");
  for (const auto& row : rows) {
    const auto id = core::uuid::parse(row[0].as<std::string>());
    BW_INVARIANT(id.has_value());
    std::optional<std::string> rewrapped_at;
    if (!row[2].is_null()) rewrapped_at = row[2].as<std::string>();
    secrets.push_back({.id = *id,
                       .created_at = row[1].as<std::string>(),
                       .rewrapped_at = std::move(rewrapped_at),
                       .key_version = row[3].as<std::int32_t>()});
  }
  return secrets;
}

std::vector<crypto::secret> load_webhook_secrets(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant) {
  std::vector<crypto::secret> secrets;
  const auto rows = db::exec_statement(tx, webhook_secret_ids_sql, std::string(stripe_endpoint_subject),
                                   static_cast<long>(limits::stripe_endpoint_secrets_max));
  for (const auto& row : rows) {
    const auto id = core::uuid::parse(row[0].as<std::string>());
    secrets.push_back(keys.open_secret(tx, {.purpose = crypto::secret_purpose::stripe_webhook_secret,
                                            .tenant = tenant,
                                            .secret_id = *id,
                                            .subject_id = std::string(stripe_endpoint_subject),
                                            .environment = {}}));
  }
  return secrets;
}

core::uuid set_api_key(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant, const crypto::secret& key,
                       std::string_view actor) {
  const auto previous = db::exec_statement(tx, api_key_ids_sql, std::string(stripe_api_key_subject), api_key_rows_max);
  for (const auto& row : previous) {
    keys.shred_secret(tx, tenant, *core::uuid::parse(row[0].as<std::string>()), actor);
  }
  const core::uuid id = crypto::random_uuid();
  crypto::secret_context context;
  context.purpose = crypto::secret_purpose::stripe_api_key;
  context.tenant = tenant;
  context.secret_id = id;
  context.subject_id = std::string(stripe_api_key_subject);
  keys.seal_secret(tx, context, key, actor);
  return id;
}

std::optional<crypto::secret> load_api_key(pqxx::work& tx, db::key_store& keys, const core::uuid& tenant) {
  const auto rows = db::exec_statement(tx, api_key_ids_sql, std::string(stripe_api_key_subject), 1L);
  if (rows.empty()) return std::nullopt;
  crypto::secret_context context;
  context.purpose = crypto::secret_purpose::stripe_api_key;
  context.tenant = tenant;
  context.secret_id = *core::uuid::parse(rows[0][0].as<std::string>());
  context.subject_id = std::string(stripe_api_key_subject);
  return keys.open_secret(tx, context);
}

std::set<std::string, std::less<>> existing_entries(pqxx::transaction_base& tx, std::span<const std::string> keys) {
  std::set<std::string, std::less<>> found;
  if (keys.empty()) return found;
  db::array_text texts;
  for (const std::string& key : keys) texts.add(key);
  for (const auto& row : db::exec_replanned(tx, existing_entries_sql, texts.finish())) found.insert(row[0].as<std::string>());
  return found;
}

std::optional<std::string> load_event_cursor(pqxx::transaction_base& tx, std::string_view scope) {
  const auto rows = db::exec_statement(tx, load_event_cursor_sql, std::string(scope));
  if (rows.empty()) return std::nullopt;
  return rows[0][0].as<std::string>();
}

void save_event_cursor(pqxx::work& tx, std::string_view scope, std::string_view last_event_id, std::int64_t recovered) {
  db::exec_statement(tx, save_event_cursor_sql, std::string(scope), std::string(last_event_id), recovered);
}

void delete_event_cursor(pqxx::work& tx, std::string_view scope) {
  db::exec_statement(tx, delete_event_cursor_sql, std::string(scope));
}

std::vector<std::string> connected_accounts(pqxx::transaction_base& tx, std::size_t accounts_max) {
  std::vector<std::string> accounts;
  for (const auto& row : db::exec_statement(tx, connected_accounts_sql, static_cast<long>(accounts_max))) {
    accounts.push_back(row[0].as<std::string>());
  }
  return accounts;
}

std::size_t schedule_stripe_recovery(pqxx::work& tx, bool platform_key, std::uint32_t tenants_max) {
  return db::exec_statement1(tx, schedule_stripe_recovery_sql, platform_key, static_cast<int>(tenants_max))[0].as<std::size_t>();
}

std::optional<stored_event> load_event(pqxx::transaction_base& tx, std::string_view event_id) {
  const auto rows = db::exec_statement(tx, load_event_sql, std::string(event_id));
  if (rows.empty()) return std::nullopt;
  return stored_event{rows[0][0].as<std::string>(), rows[0][1].as<std::string>(), rows[0][2].as<bool>()};
}

std::map<std::string, stored_event, std::less<>> load_events(pqxx::transaction_base& tx,
                                                             std::span<const std::string> event_ids) {
  std::map<std::string, stored_event, std::less<>> events;
  if (event_ids.empty()) return events;
  db::array_text ids;
  for (const std::string& id : event_ids) ids.add(id);
  for (const auto& row : db::exec_statement(tx, load_events_sql, ids.finish())) {
    events.emplace(row[0].as<std::string>(),
                   stored_event{row[1].as<std::string>(), row[2].as<std::string>(), row[3].as<bool>()});
  }
  return events;
}

account_claim claim_stripe_account(pqxx::work& tx, std::string_view account) {
  const std::string id(account);
  db::exec_statement(tx, lock_account_sql, id);
  const pqxx::row mapped = db::exec_statement1(tx, account_tenant_sql, id);
  if (!mapped[0].is_null()) return mapped[0].as<bool>() ? account_claim::already_connected : account_claim::other_tenant;
  db::exec_statement(tx, insert_account_sql, id);
  return account_claim::connected;
}

std::vector<std::string> move_unrouted_events(pqxx::work& tx, std::string_view account, std::size_t events_max) {
  std::vector<std::string> moved;
  for (const auto& row : db::exec_statement(tx, move_unrouted_sql, std::string(account), static_cast<long>(events_max))) {
    moved.push_back(row[0].as<std::string>());
  }
  return moved;
}

}  // namespace bankworker::stripe
