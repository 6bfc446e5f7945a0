#include "connectors/plaid/store.hpp"

#include <array>
#include <stdexcept>
#include <string_view>
#include <unordered_set>

#include "db/copy_rows.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::plaid {

namespace {

// One text for both statements below (string literals concatenate; a constexpr pointer cannot).
#define BW_LOAD_CONNECTION_SQL                                                                             \
  "SELECT c.status, c.item_id, c.environment, coalesce(c.sync_cursor, ''), c.last_synced_at IS NOT NULL," \
  " (SELECT s.secret_id FROM bankworker.sealed_secrets s WHERE s.tenant_id = c.tenant_id"                  \
  "   AND s.purpose = 'plaid.access_token' AND s.subject_id = c.connection_id::text"                        \
  "   ORDER BY s.created_at DESC LIMIT 1)"                                                                  \
  " FROM bankworker.connections c WHERE c.tenant_id = $1::uuid AND c.connection_id = $2::uuid"
constexpr db::statement load_connection_sql{"plaid_load_connection", BW_LOAD_CONNECTION_SQL};
constexpr db::statement load_connection_locked_sql{"plaid_load_connection_locked",
                                              BW_LOAD_CONNECTION_SQL " FOR UPDATE OF c"};
#undef BW_LOAD_CONNECTION_SQL

constexpr db::statement find_by_item_sql{"plaid_find_by_item",
    "SELECT connection_id FROM bankworker.connections WHERE tenant_id = $1::uuid AND item_id = $2"};

constexpr db::statement insert_connection_sql{"plaid_insert_connection",
    "INSERT INTO bankworker.connections (tenant_id, connection_id, environment, item_id, institution_id, status,"
    " linked_by_job, next_sync_at)"
    " VALUES ($1::uuid, $2::uuid, $3, $4, $5, 'active', $6::bigint, now() + $7::bigint * interval '1 second')"};

constexpr db::statement linked_by_job_sql{"plaid_linked_by_job",
    "SELECT connection_id FROM bankworker.connections WHERE tenant_id = $1::uuid AND linked_by_job = $2::bigint"};

constexpr db::statement set_status_sql{"plaid_set_status",
    "UPDATE bankworker.connections SET status = $3, last_error = left($4, 2048), updated_at = now()"
    " WHERE tenant_id = $1::uuid AND connection_id = $2::uuid"};

constexpr db::statement upsert_accounts_sql{"plaid_upsert_accounts",
    "INSERT INTO bankworker.accounts AS a (tenant_id, account_id, connection_id, name, official_name, mask, type,"
    " subtype, currency, current_balance_minor, available_balance_minor, limit_minor)"
    " SELECT $1::uuid, u.account_id, $2::uuid, u.name, u.official_name, u.mask, u.type, u.subtype, u.currency,"
    "  u.current_minor, u.available_minor, u.limit_minor"
    " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],"
    "  $10::bigint[], $11::bigint[], $12::bigint[])"
    "  AS u(account_id, name, official_name, mask, type, subtype, currency, current_minor, available_minor,"
    "  limit_minor)"
    " ON CONFLICT (tenant_id, account_id) DO UPDATE SET name = excluded.name, official_name = excluded.official_name,"
    "  mask = excluded.mask, type = excluded.type, subtype = excluded.subtype, currency = excluded.currency,"
    "  current_balance_minor = excluded.current_balance_minor,"
    "  available_balance_minor = excluded.available_balance_minor, limit_minor = excluded.limit_minor,"
    "  updated_at = now()"
    " WHERE a.connection_id = excluded.connection_id"};

// The staging table is private to the session and has no row-level security, which is why it
// exists: COPY FROM refuses tables with row-level security. It is made once per session and
// emptied at the end of every transaction that used it (ON COMMIT DELETE ROWS; rows of a
// transaction that rolled back were never visible). Creating it in every apply, as before, cost
// about 1.3 ms of catalog work per transaction (pgbench, 1,000-row applies). IF NOT EXISTS
// notices when the table is there; they are silenced for this one statement.
// Three commands in one round trip, which a prepared statement cannot hold: the one SQL text of the
// room that is not a db::statement.
constexpr const char* create_stage_sql =
    "SET LOCAL client_min_messages TO warning;"
    " CREATE TEMPORARY TABLE IF NOT EXISTS plaid_stage (transaction_id text NOT NULL, account_id text NOT NULL,"
    " amount_minor bigint NOT NULL, currency text NOT NULL, date date NOT NULL, authorized_date date,"
    " name text NOT NULL, merchant_name text, payment_channel text, category_primary text, category_detailed text,"
    " pending boolean NOT NULL, pending_transaction_id text) ON COMMIT DELETE ROWS;"
    " SET LOCAL client_min_messages TO DEFAULT";
constexpr std::array<const char*, 13> stage_columns{
    "transaction_id", "account_id",    "amount_minor",     "currency",          "date",
    "authorized_date", "name",         "merchant_name",    "payment_channel",   "category_primary",
    "category_detailed", "pending",    "pending_transaction_id"};

// The first sync of a connection: every row is new (nothing was ever applied for it), so a plain
// INSERT skips the speculative insertion ON CONFLICT costs per row. If a row does exist after all
// (the same transaction id under another connection of the tenant), the unique violation aborts
// the transaction and the caller applies again with the upsert.
constexpr db::statement insert_transactions_sql{"plaid_insert_transactions",
    "INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
    " currency, date, authorized_date, name, merchant_name, payment_channel, category_primary, category_detailed,"
    " pending, pending_transaction_id)"
    " SELECT $1::uuid, s.transaction_id, s.account_id, $2::uuid, s.amount_minor, s.currency, s.date,"
    "  s.authorized_date, s.name, s.merchant_name, s.payment_channel, s.category_primary, s.category_detailed,"
    "  s.pending, s.pending_transaction_id FROM pg_temp.plaid_stage s"};

// A row tombstoned by an earlier sync stays removed; a row of another connection is not touched.
constexpr db::statement upsert_transactions_sql{"plaid_upsert_transactions",
    "INSERT INTO bankworker.transactions AS t (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
    " currency, date, authorized_date, name, merchant_name, payment_channel, category_primary, category_detailed,"
    " pending, pending_transaction_id)"
    " SELECT $1::uuid, s.transaction_id, s.account_id, $2::uuid, s.amount_minor, s.currency, s.date,"
    "  s.authorized_date, s.name, s.merchant_name, s.payment_channel, s.category_primary, s.category_detailed,"
    "  s.pending, s.pending_transaction_id FROM pg_temp.plaid_stage s"
    " ON CONFLICT (tenant_id, transaction_id) DO UPDATE SET account_id = excluded.account_id,"
    "  amount_minor = excluded.amount_minor, currency = excluded.currency, date = excluded.date,"
    "  authorized_date = excluded.authorized_date, name = excluded.name, merchant_name = excluded.merchant_name,"
    "  payment_channel = excluded.payment_channel, category_primary = excluded.category_primary,"
    "  category_detailed = excluded.category_detailed, pending = excluded.pending,"
    "  pending_transaction_id = excluded.pending_transaction_id, updated_at = now()"
    " WHERE t.removed_at IS NULL AND t.connection_id = excluded.connection_id"};

constexpr db::statement tombstone_sql{"plaid_tombstone",
    "UPDATE bankworker.transactions SET removed_at = now(), updated_at = now()"
    " WHERE tenant_id = $1::uuid AND connection_id = $2::uuid AND transaction_id = ANY($3::text[])"
    " AND removed_at IS NULL"};
constexpr db::statement tombstone_pending_sql{"plaid_tombstone_pending",
    "UPDATE bankworker.transactions SET removed_at = now(), updated_at = now()"
    " WHERE tenant_id = $1::uuid AND connection_id = $2::uuid AND transaction_id = ANY($3::text[])"
    " AND removed_at IS NULL AND pending"};

constexpr db::statement set_cursor_sql{"plaid_set_cursor",
    "UPDATE bankworker.connections SET sync_cursor = $3, last_synced_at = now(), last_error = NULL,"
    " updated_at = now() WHERE tenant_id = $1::uuid AND connection_id = $2::uuid"};
constexpr db::statement clear_cursor_sql{"plaid_clear_cursor",
    "UPDATE bankworker.connections SET sync_cursor = NULL, updated_at = now()"
    " WHERE tenant_id = $1::uuid AND connection_id = $2::uuid"};
constexpr db::statement mark_revoked_sql{"plaid_mark_revoked",
    "UPDATE bankworker.connections SET status = 'revoked', sync_cursor = NULL, next_sync_at = NULL,"
    " last_error = NULL, updated_at = now() WHERE tenant_id = $1::uuid AND connection_id = $2::uuid"};

// The quarantine: rows the walk has a newer word on leave it; set-aside rows enter or replace.
constexpr db::statement unquarantine_sql{"plaid_unquarantine",
    "DELETE FROM bankworker.plaid_quarantine WHERE tenant_id = $1::uuid AND connection_id = $2::uuid"
    " AND ((kind = 'transaction' AND plaid_id = ANY($3::text[])) OR (kind = 'account' AND plaid_id = ANY($4::text[])))"};
constexpr db::statement quarantine_sql{"plaid_quarantine",
    "INSERT INTO bankworker.plaid_quarantine AS q (tenant_id, connection_id, kind, plaid_id, reason, currency, detail, raw)"
    " SELECT $1::uuid, $2::uuid, u.kind, u.plaid_id, u.reason, u.currency, left(u.detail, 1024), u.raw"
    " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
    "  AS u(kind, plaid_id, reason, currency, detail, raw)"
    " ON CONFLICT (tenant_id, connection_id, kind, plaid_id) DO UPDATE SET reason = excluded.reason,"
    "  currency = excluded.currency, detail = excluded.detail, raw = excluded.raw, quarantined_at = now()"};
// Only unknown_currency rows can start to apply by themselves; the others wait for a person.
constexpr db::statement releasable_sql{"plaid_releasable_quarantine",
    "SELECT q.kind, q.plaid_id, q.raw FROM bankworker.plaid_quarantine q"
    " WHERE q.tenant_id = $1::uuid AND q.connection_id = $2::uuid AND q.reason = 'unknown_currency'"
    " AND EXISTS (SELECT 1 FROM bankworker.currencies c WHERE c.code = q.currency)"
    " ORDER BY q.quarantined_at, q.kind, q.plaid_id LIMIT $3::bigint"};

constexpr db::statement enqueue_link_sql{"plaid_enqueue_link", "SELECT bankworker.enqueue_link_request($1::uuid, $2)"};
constexpr db::statement enqueue_sync_sql{"plaid_enqueue_sync",
                                         "SELECT bankworker.enqueue_sync_request($1::uuid, $2::uuid)"};
constexpr db::statement enqueue_revoke_sql{"plaid_enqueue_revoke",
                                           "SELECT bankworker.enqueue_revoke_request($1::uuid, $2::uuid)"};
constexpr db::statement cancel_connection_sql{"plaid_cancel_connection_jobs",
                                              "SELECT bankworker.cancel_connection_jobs($1::uuid, $2::uuid, $3::bigint)"};

constexpr const char* utc_text = "YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"";
constexpr db::statement list_connections_sql{"plaid_list_connections",
    "SELECT c.connection_id, c.status, c.item_id, c.institution_id,"
    " to_char(c.last_synced_at AT TIME ZONE 'UTC', $2), to_char(c.next_sync_at AT TIME ZONE 'UTC', $2),"
    " c.last_error,"
    " (SELECT count(*) FROM bankworker.accounts a WHERE a.tenant_id = c.tenant_id"
    "   AND a.connection_id = c.connection_id),"
    " (SELECT count(*) FROM bankworker.transactions t WHERE t.tenant_id = c.tenant_id"
    "   AND t.connection_id = c.connection_id AND t.removed_at IS NULL),"
    " to_char(c.revoking_since AT TIME ZONE 'UTC', $2),"
    " (SELECT count(*) FROM bankworker.plaid_quarantine q WHERE q.tenant_id = c.tenant_id"
    "   AND q.connection_id = c.connection_id)"
    " FROM bankworker.connections c WHERE c.tenant_id = $1::uuid ORDER BY c.created_at, c.connection_id LIMIT 10000"};

std::optional<std::string> optional_text(const pqxx::field& field) {
  if (field.is_null()) return std::nullopt;
  return field.as<std::string>();
}

std::optional<std::string> number_or_null(const std::optional<std::int64_t>& value) {
  if (!value) return std::nullopt;
  return std::to_string(*value);
}

const char* or_null(const std::optional<std::string>& text) { return text ? text->c_str() : nullptr; }

// A request function's job id; 0 when it returned none.
std::int64_t job_id_of(const pqxx::field& field) { return field.is_null() ? 0 : field.as<std::int64_t>(); }

// A status column (the check constraint allows only connection_status's spellings).
connection_status status_of(const pqxx::field& field) {
  const auto status = parse_connection_status(field.as<std::string>());
  if (!status) throw std::runtime_error("bankworker.connections has a status this binary does not know");
  return *status;
}

}  // namespace

std::optional<plaid_connection> load_plaid_connection(pqxx::work& tx, const core::uuid& tenant,
                                                      const core::uuid& connection, bool lock) {
  const pqxx::result rows = db::exec_statement(tx, lock ? load_connection_locked_sql : load_connection_sql,
                                           tenant.to_string(), connection.to_string());
  if (rows.empty()) return std::nullopt;
  const pqxx::row row = rows[0];
  plaid_connection found;
  found.connection = connection;
  found.status = status_of(row[0]);
  found.item_id = optional_text(row[1]);
  found.environment = row[2].as<std::string>();
  found.cursor = row[3].as<std::string>();
  found.synced_before = row[4].as<bool>();
  if (!row[5].is_null()) found.token_secret = core::uuid::parse(row[5].as<std::string>());
  return found;
}

std::optional<core::uuid> find_connection_by_item(pqxx::work& tx, const core::uuid& tenant, std::string_view item_id) {
  const pqxx::result rows = db::exec_statement(tx, find_by_item_sql, tenant.to_string(), std::string(item_id));
  if (rows.empty()) return std::nullopt;
  return core::uuid::parse(rows[0][0].as<std::string>());
}

void insert_plaid_connection(pqxx::work& tx, const core::uuid& tenant, const new_plaid_connection& row) {
  db::exec_statement(tx, insert_connection_sql, tenant.to_string(), row.connection.to_string(), row.environment,
                 row.item_id, or_null(row.institution_id), row.linked_by_job,
                 static_cast<std::int64_t>(row.first_periodic_sync_in.count()));
}

std::optional<core::uuid> connection_linked_by_job(pqxx::work& tx, const core::uuid& tenant, std::int64_t job_id) {
  const pqxx::result rows = db::exec_statement(tx, linked_by_job_sql, tenant.to_string(), job_id);
  if (rows.empty()) return std::nullopt;
  return core::uuid::parse(rows[0][0].as<std::string>());
}

void set_connection_status(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                           connection_status status, std::optional<std::string_view> last_error) {
  const std::optional<std::string> error = last_error ? std::optional<std::string>(*last_error) : std::nullopt;
  db::exec_statement(tx, set_status_sql, tenant.to_string(), connection.to_string(), std::string(to_string(status)),
                     or_null(error));
}

std::int64_t enqueue_link(pqxx::work& tx, const core::uuid& tenant, const std::string& public_token) {
  return job_id_of(db::exec_statement1(tx, enqueue_link_sql, tenant.to_string(), public_token)[0]);
}

std::int64_t enqueue_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  return job_id_of(db::exec_statement1(tx, enqueue_sync_sql, tenant.to_string(), connection.to_string())[0]);
}

std::int64_t enqueue_revoke(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  return job_id_of(db::exec_statement1(tx, enqueue_revoke_sql, tenant.to_string(), connection.to_string())[0]);
}

void cancel_connection_jobs(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                            std::int64_t except_job) {
  db::exec_statement(tx, cancel_connection_sql, tenant.to_string(), connection.to_string(), except_job);
}

void upsert_accounts(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                     std::span<const plaid::account> accounts) {
  if (accounts.empty()) return;
  db::array_text ids, names, official_names, masks, types, subtypes, currencies, current, available, limit;
  for (const plaid::account& account : accounts) {
    ids.add(account.account_id);
    names.add(account.name);
    official_names.add(account.official_name);
    masks.add(account.mask);
    types.add(account.type);
    subtypes.add(account.subtype);
    currencies.add(account.currency);
    current.add(number_or_null(account.current_minor));
    available.add(number_or_null(account.available_minor));
    limit.add(number_or_null(account.limit_minor));
  }
  db::exec_statement(tx, upsert_accounts_sql, tenant.to_string(), connection.to_string(), ids.finish(), names.finish(),
                 official_names.finish(), masks.finish(), types.finish(), subtypes.finish(), currencies.finish(),
                 current.finish(), available.finish(), limit.finish());
}

apply_counts apply_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                        const plaid::sync_changes& changes, std::string_view next_cursor, bool first_sync) {
  const std::string tenant_text = tenant.to_string();
  const std::string connection_text = connection.to_string();
  apply_counts counts;
  upsert_accounts(tx, tenant, connection, changes.accounts);

  if (!changes.upserts.empty()) {
    tx.exec0(create_stage_sql);
    {
      db::copy_rows stage(tx, "plaid_stage", stage_columns);
      for (const plaid::transaction& row : changes.upserts) {
        db::copy_text& fields = stage.row();
        fields.text(row.transaction_id);
        fields.text(row.account_id);
        fields.number(row.amount_minor);
        fields.text(row.currency);
        fields.text(row.date);
        fields.text(row.authorized_date);
        fields.text(row.name);
        fields.text(row.merchant_name);
        fields.text(row.payment_channel);
        fields.text(row.category_primary);
        fields.text(row.category_detailed);
        fields.boolean(row.pending);
        fields.text(row.pending_transaction_id);
        stage.end_row();
      }
      stage.complete();
    }
    counts.upserted = db::exec_statement(tx, first_sync ? insert_transactions_sql : upsert_transactions_sql, tenant_text,
                                      connection_text)
                          .affected_rows();
  }
  // On a connection's first sync nothing of it was stored before this transaction. A removal can
  // then only meet a row inserted just above, and the buffer already dropped those; a posted
  // transaction's pending twin can only be a pending row of this very batch. Statements that
  // cannot match are not sent (a zero-row tombstone still probed the index once per id).
  if (!changes.removals.empty() && !first_sync) {
    db::array_text ids;
    for (const std::string& id : changes.removals) ids.add(id);
    counts.tombstoned += db::exec_statement(tx, tombstone_sql, tenant_text, connection_text, ids.finish()).affected_rows();
  }
  if (!changes.posted_pending.empty()) {
    std::unordered_set<std::string_view> pending_here;
    if (first_sync) {
      for (const plaid::transaction& row : changes.upserts) {
        if (row.pending) pending_here.insert(row.transaction_id);
      }
    }
    db::array_text ids;
    for (const std::string& id : changes.posted_pending) {
      if (!first_sync || pending_here.contains(id)) ids.add(id);
    }
    if (!ids.empty()) {
      counts.tombstoned +=
          db::exec_statement(tx, tombstone_pending_sql, tenant_text, connection_text, ids.finish()).affected_rows();
    }
  }
  db::exec_statement(tx, set_cursor_sql, tenant_text, connection_text, std::string(next_cursor));
  return counts;
}

std::size_t quarantine_rows(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                            const plaid::sync_changes& changes, bool synced_before) {
  const std::string tenant_text = tenant.to_string();
  const std::string connection_text = connection.to_string();
  db::array_text transaction_ids, account_ids;
  if (synced_before) {
    for (const plaid::transaction& row : changes.upserts) transaction_ids.add(row.transaction_id);
    for (const std::string& id : changes.removals) transaction_ids.add(id);
    for (const plaid::account& row : changes.accounts) account_ids.add(row.account_id);
  }
  if (synced_before && (!transaction_ids.empty() || !account_ids.empty())) {
    db::exec_statement(tx, unquarantine_sql, tenant_text, connection_text, transaction_ids.finish(),
                       account_ids.finish());
  }
  if (changes.rejected.empty()) return 0;
  db::array_text kinds, ids, reasons, codes, details, raws;
  for (const plaid::rejected_row& row : changes.rejected) {
    kinds.add(row.kind == rejected_row::row_kind::account ? "account" : "transaction");
    ids.add(row.plaid_id);
    reasons.add(std::string(to_string(row.reason)));
    codes.add(row.currency);
    details.add(row.detail);
    raws.add(row.raw_json);
  }
  return db::exec_statement(tx, quarantine_sql, tenant_text, connection_text, kinds.finish(), ids.finish(),
                            reasons.finish(), codes.finish(), details.finish(), raws.finish())
      .affected_rows();
}

std::vector<quarantined_row> releasable_quarantine(pqxx::work& tx, const core::uuid& tenant,
                                                   const core::uuid& connection) {
  std::vector<quarantined_row> out;
  for (const pqxx::row& row : db::exec_statement(tx, releasable_sql, tenant.to_string(), connection.to_string(),
                                                 static_cast<std::int64_t>(released_rows_max))) {
    quarantined_row found;
    found.kind = row[0].as<std::string>() == "account" ? rejected_row::row_kind::account
                                                        : rejected_row::row_kind::transaction;
    found.plaid_id = row[1].as<std::string>();
    found.raw_json = row[2].as<std::string>();
    out.push_back(std::move(found));
  }
  return out;
}

void clear_cursor(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  db::exec_statement(tx, clear_cursor_sql, tenant.to_string(), connection.to_string());
}

void mark_revoked(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  db::exec_statement(tx, mark_revoked_sql, tenant.to_string(), connection.to_string());
}

std::vector<connection_summary> list_connections(pqxx::work& tx, const core::uuid& tenant) {
  std::vector<connection_summary> out;
  for (const pqxx::row& row : db::exec_statement(tx, list_connections_sql, tenant.to_string(), utc_text)) {
    connection_summary summary;
    summary.connection = core::uuid::parse(row[0].as<std::string>()).value();
    summary.status = status_of(row[1]);
    summary.item_id = optional_text(row[2]);
    summary.institution_id = optional_text(row[3]);
    summary.last_synced_at = optional_text(row[4]);
    summary.next_sync_at = optional_text(row[5]);
    summary.last_error = optional_text(row[6]);
    summary.accounts = row[7].as<std::int64_t>();
    summary.transactions = row[8].as<std::int64_t>();
    summary.revoking_since = optional_text(row[9]);
    summary.quarantined = row[10].as<std::int64_t>();
    out.push_back(std::move(summary));
  }
  return out;
}

}  // namespace bankworker::plaid
