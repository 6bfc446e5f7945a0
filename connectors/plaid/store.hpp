#pragma once
// Plaid connections, their accounts and transactions in the database (DESIGN.md §1.1, §1.2,
// §1.4). SQL only: the rules about when to call what live in connectors/plaid/jobs.cpp.
//
// Every function runs inside the caller's tenant-scoped transaction (db::with_tenant), so
// row-level security applies; the tenant is also named in each statement so the primary keys are
// used.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "connectors/plaid/connection_status.hpp"
#include "connectors/plaid/sync_buffer.hpp"
#include "core/uuid.hpp"
#include "db/external_calls.hpp"

namespace bankworker::plaid {

struct plaid_connection {
  core::uuid connection;
  connection_status status = connection_status::linking;
  std::optional<std::string> item_id;
  std::string environment;
  std::string cursor;  // empty: sync from the beginning
  bool synced_before = false;
  std::optional<core::uuid> token_secret;  // the sealed access token, until shredded
};

// The connection (and its sealed token's id). `lock` takes FOR UPDATE: status changes and the
// apply of a sync serialise on it.
std::optional<plaid_connection> load_plaid_connection(pqxx::work& tx, const core::uuid& tenant,
                                                      const core::uuid& connection, bool lock);

// The connection of an item, if this tenant has linked it.
std::optional<core::uuid> find_connection_by_item(pqxx::work& tx, const core::uuid& tenant, std::string_view item_id);

struct new_plaid_connection {
  core::uuid connection;
  std::string environment;
  std::string item_id;
  std::optional<std::string> institution_id;
  std::int64_t linked_by_job = 0;
  std::chrono::seconds first_periodic_sync_in{6 * 3600};
};
void insert_plaid_connection(pqxx::work& tx, const core::uuid& tenant, const new_plaid_connection& row);

// The connection made by a plaid.link job, once it committed.
std::optional<core::uuid> connection_linked_by_job(pqxx::work& tx, const core::uuid& tenant, std::int64_t job_id);

void set_connection_status(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                           connection_status status, std::optional<std::string_view> last_error);

// The request functions the app reaches too (bankworker.enqueue_*_request, each NOTIFYing): the
// job's id (0: none returned). A sync or revocation already waiting absorbs the new one (its id
// is returned).
std::int64_t enqueue_link(pqxx::work& tx, const core::uuid& tenant, const std::string& public_token);
std::int64_t enqueue_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);
std::int64_t enqueue_revoke(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);
// Cancels the connection's waiting jobs but `except_job` (the revocation running).
void cancel_connection_jobs(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                            std::int64_t except_job);

// Upserts the accounts Plaid reported (one statement).
void upsert_accounts(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                     std::span<const plaid::account> accounts);

struct apply_counts {
  std::size_t upserted = 0;    // rows inserted or updated
  std::size_t tombstoned = 0;  // rows marked removed (removals and replaced pending ones)
};

// Applies a walk's collapsed changes: upserts by transaction_id (COPY into a temporary table, then
// one INSERT … ON CONFLICT; a tombstoned row is never brought back), then tombstones. Then the
// connection's cursor and last_synced_at. Nothing is committed here: the caller commits it all,
// with the job's completion, or nothing. `first_sync` (the connection never synced) inserts
// without ON CONFLICT, which is faster; it throws pqxx::unique_violation if a row exists after
// all, and the caller then applies again, in a new transaction, without it. It also skips the
// tombstone statements that can only meet rows stored before (the caller must have read
// last_synced_at under the connection's row lock in tx for this to hold).
apply_counts apply_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                        const plaid::sync_changes& changes, std::string_view next_cursor, bool first_sync = false);

// The quarantine (bankworker.plaid_quarantine, issue #16), in the apply's transaction: drops the
// rows this walk has a newer word on (upserted, removed or accounts reported), then stores the
// walk's set-aside rows (a row quarantined before is replaced). Returns how many were stored.
// `synced_before` false (the connection's first apply) skips the drop: nothing is quarantined yet.
std::size_t quarantine_rows(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection,
                            const plaid::sync_changes& changes, bool synced_before);

// A quarantined row that may apply now: its currency is in bankworker.currencies (declared since).
struct quarantined_row {
  rejected_row::row_kind kind = rejected_row::row_kind::transaction;
  std::string plaid_id;
  std::string raw_json;
};
inline constexpr std::size_t released_rows_max = page_items_max;  // per apply; the rest at the next sync
std::vector<quarantined_row> releasable_quarantine(pqxx::work& tx, const core::uuid& tenant,
                                                   const core::uuid& connection);

// Forgets the cursor (Plaid no longer recognises it for this token): the next sync starts over.
void clear_cursor(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);

// Revocation's end state: status revoked, cursor and schedule cleared. The data stays (the tenant's
// books); the token is shredded by the key store in the same transaction.
void mark_revoked(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection);

struct connection_summary {
  core::uuid connection;
  connection_status status = connection_status::linking;
  std::optional<std::string> item_id;
  std::optional<std::string> institution_id;
  std::optional<std::string> last_synced_at;  // ISO 8601 UTC
  std::optional<std::string> next_sync_at;
  std::optional<std::string> last_error;
  std::int64_t accounts = 0;
  std::int64_t transactions = 0;  // live (not removed)
  std::int64_t quarantined = 0;   // rows kept in bankworker.plaid_quarantine (issue #16)
  // While 'revoking': since when (Plaid has not confirmed /item/remove yet; last_error says why).
  std::optional<std::string> revoking_since;
};
std::vector<connection_summary> list_connections(pqxx::work& tx, const core::uuid& tenant);

}  // namespace bankworker::plaid
