// What a verified Plaid webhook changes, in SQL (webhook_store.hpp).

#include "connectors/plaid/webhook_store.hpp"

#include "connectors/plaid/store.hpp"
#include "core/json_text.hpp"
#include "db/audit.hpp"
#include "db/statement.hpp"

namespace bankworker::plaid {

namespace {

constexpr db::statement item_connections_sql{"plaid_item_connections",
    "SELECT tenant_id::text, connection_id::text, status FROM bankworker.plaid_item_connection($1)"};
// The status is read under a row lock so that a revocation starting meanwhile is seen.
constexpr db::statement connection_status_sql{"plaid_connection_status_locked",
    "SELECT status FROM bankworker.connections WHERE tenant_id = $1::text::uuid AND connection_id = $2::text::uuid"
    " FOR UPDATE"};
constexpr db::statement needs_reauth_sql{"plaid_webhook_needs_reauth",
    "UPDATE bankworker.connections SET status = 'needs_reauth', last_error = $3, updated_at = now()"
    " WHERE tenant_id = $1::text::uuid AND connection_id = $2::text::uuid AND status = 'active'"};

std::optional<connection_status> locked_status(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  const auto rows = db::exec_statement(tx, connection_status_sql, tenant.to_string(), connection.to_string());
  if (rows.empty()) return std::nullopt;
  return parse_connection_status(rows[0][0].as<std::string>());
}

}  // namespace

std::vector<item_connection> find_item_connections(pqxx::transaction_base& tx, std::string_view item_id) {
  std::vector<item_connection> found;
  for (const auto& row : db::exec_statement(tx, item_connections_sql, std::string(item_id))) {
    const auto tenant = core::uuid::parse(row[0].as<std::string>());
    const auto connection = core::uuid::parse(row[1].as<std::string>());
    const auto status = parse_connection_status(row[2].as<std::string>());
    // uuid columns: PostgreSQL's text form always parses; the status has a check constraint.
    if (!tenant || !connection || !status) continue;
    found.push_back({*tenant, *connection, *status});
  }
  return found;
}

bool request_connection_sync(pqxx::work& tx, const core::uuid& tenant, const core::uuid& connection) {
  const auto status = locked_status(tx, tenant, connection);
  if (!status || *status == connection_status::revoking || *status == connection_status::revoked) return false;
  enqueue_sync(tx, tenant, connection);
  return true;
}

bool mark_connection_needs_reauth(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                                  const core::uuid& connection, std::string_view error_code) {
  const std::string last_error = std::string(error_code) + " (Plaid webhook ITEM ERROR)";
  if (db::exec_statement(tx, needs_reauth_sql, tenant.to_string(), connection.to_string(), last_error)
          .affected_rows() != 1) {
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
  const auto status = locked_status(tx, tenant, connection);
  if (!status || *status == connection_status::revoked) return false;
  enqueue_revoke(tx, tenant, connection);
  return true;
}

}  // namespace bankworker::plaid
