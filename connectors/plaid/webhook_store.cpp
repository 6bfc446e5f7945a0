#include "connectors/plaid/webhook_store.hpp"

#include "core/json_text.hpp"
#include "db/audit.hpp"

namespace bankworker::plaid {

namespace {

constexpr const char* item_connections_sql =
    "SELECT tenant_id::text, connection_id::text, status FROM bankworker.plaid_item_connection($1)";
// The status is read under a row lock so that a revocation starting meanwhile is seen.
constexpr const char* connection_status_sql =
    "SELECT status FROM bankworker.connections WHERE tenant_id = $1::text::uuid AND connection_id = $2::text::uuid"
    " FOR UPDATE";
constexpr const char* request_sync_sql = "SELECT bankworker.enqueue_sync_request($1::text::uuid, $2::text::uuid)";
constexpr const char* request_revoke_sql = "SELECT bankworker.enqueue_revoke_request($1::text::uuid, $2::text::uuid)";
constexpr const char* needs_reauth_sql =
    "UPDATE bankworker.connections SET status = 'needs_reauth', last_error = $3, updated_at = now()"
    " WHERE tenant_id = $1::text::uuid AND connection_id = $2::text::uuid AND status = 'active'";

std::string locked_status(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  const auto rows = tx.exec_params(connection_status_sql, tenant.to_string(), connection.to_string());
  return rows.empty() ? std::string() : rows[0][0].as<std::string>();
}

}  // namespace

std::vector<item_connection> find_item_connections(pqxx::transaction_base& tx, std::string_view item_id) {
  std::vector<item_connection> found;
  for (const auto& row : tx.exec_params(item_connections_sql, std::string(item_id))) {
    const auto tenant = core::uuid::parse(row[0].as<std::string>());
    const auto connection = core::uuid::parse(row[1].as<std::string>());
    if (!tenant || !connection) continue;  // uuid columns: PostgreSQL's text form always parses
    found.push_back({*tenant, *connection, row[2].as<std::string>()});
  }
  return found;
}

bool request_connection_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  const std::string status = locked_status(tx, tenant, connection);
  if (status.empty() || status == "revoking" || status == "revoked") return false;
  tx.exec_params1(request_sync_sql, tenant.to_string(), connection.to_string());
  return true;
}

bool mark_connection_needs_reauth(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                                  const core::uuid& connection, std::string_view error_code) {
  const std::string last_error = std::string(error_code) + " (Plaid webhook ITEM ERROR)";
  if (tx.exec_params0(needs_reauth_sql, tenant.to_string(), connection.to_string(), last_error).affected_rows() != 1) {
    return false;
  }
  const std::string subject = connection.to_string();
  std::string details = "{\"error_code\":";
  core::append_json_string(error_code, details);
  details += ",\"source\":\"plaid.webhook\"}";
  db::append_audit(tx, keys,
               {.tenant = tenant,
                .actor = "worker",
                .action = "connection.needs_reauth",
                .subject = subject,
                .details = std::move(details)});
  return true;
}

bool request_connection_revoke(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  const std::string status = locked_status(tx, tenant, connection);
  if (status.empty() || status == "revoked") return false;
  tx.exec_params1(request_revoke_sql, tenant.to_string(), connection.to_string());
  return true;
}

}  // namespace bankworker::plaid
