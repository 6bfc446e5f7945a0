// Plaid's connections page in the operator console (connectors/plaid/console_page.hpp). The console
// wraps it (session, CSRF, headers, layout) and appends the audit rows it names.
#include "connectors/plaid/console_page.hpp"

#include "connectors/plaid/connection_status.hpp"
#include "connectors/plaid/gauges.hpp"
#include "connectors/plaid/store.hpp"
#include "crypto/redact.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"

namespace bankworker::plaid {

namespace {

using service::admin_answer;
using service::admin_request;
using service::escape_html;

constexpr std::string_view page_path = "plaid/connections";

using service::table_cell;

std::string tenant_form(const std::optional<core::uuid>& tenant, std::string_view status) {
  return "<form method=\"get\" action=\"/console/p/plaid/connections\"><label>Tenant <input name=\"tenant\" size=\"40\" "
         "value=\"" + escape_html(tenant ? tenant->to_string() : "") + "\"></label><label>Status <input name=\"status\" "
         "value=\"" + escape_html(status) + "\"></label><button type=\"submit\">Show</button></form>";
}

std::string connection_row(const connection_summary& c, const admin_request& request, const core::uuid& tenant) {
  std::string html = "<tr>" + table_cell(c.connection.to_string()) + table_cell(to_string(c.status)) +
                     table_cell(c.institution_id.value_or("")) + table_cell(c.last_synced_at.value_or("never")) +
                     table_cell(c.next_sync_at.value_or("-")) + table_cell(crypto::redact(c.last_error.value_or(""))) +
                     table_cell(std::to_string(c.accounts)) + table_cell(std::to_string(c.transactions)) + "<td>";
  if (c.status == connection_status::active || c.status == connection_status::needs_reauth) {
    html += "<form method=\"post\" action=\"/console/p/plaid/connections\">" + request.csrf_input +
            "<input type=\"hidden\" name=\"tenant\" value=\"" + tenant.to_string() +
            "\"><input type=\"hidden\" name=\"connection\" value=\"" + c.connection.to_string() +
            "\"><button type=\"submit\">Request a sync</button></form>";
  }
  return html + "</td></tr>";
}

struct tenant_connections {
  std::optional<ledger::tenant_summary> tenant;
  std::vector<connection_summary> connections;
};

admin_answer show(db::pool& connections, const admin_request& request) {
  const std::string_view status_text = request.field("status").value_or("");
  const std::string_view tenant_text = request.field("tenant").value_or("");
  std::optional<connection_status> status;
  if (!status_text.empty()) {
    status = parse_connection_status(status_text);
    if (!status) return service::admin_refusal(400, "status must be linking, active, needs_reauth, broken, revoking or revoked");
  }
  if (tenant_text.empty()) {
    return {200, tenant_form(std::nullopt, status_text) + "<p>Give a tenant to see its connections.</p>", {}, {}};
  }
  const auto tenant = core::uuid::parse(tenant_text);
  if (!tenant) return service::admin_refusal(400, "tenant must be a uuid, not '" + std::string(tenant_text) + "'");
  const tenant_connections found = db::with_tenant(connections, *tenant, [&](pqxx::work& tx) {
    tenant_connections read{ledger::describe_tenant(tx), {}};
    if (read.tenant) read.connections = list_connections(tx, *tenant);
    return read;
  });
  if (!found.tenant) return service::admin_refusal(404, "No tenant " + tenant->to_string() + ".");
  std::string body = tenant_form(tenant, status_text) + "<p>Tenant <strong>" + escape_html(found.tenant->name) +
                     "</strong> <code>" + tenant->to_string() + "</code></p>";
  if (request.field("requested")) body += "<p class=\"ok\">Sync requested.</p>";
  body += "<table><tr><th>Connection</th><th>Status</th><th>Institution</th><th>Last sync</th><th>Next sync</th>"
          "<th>Last error</th><th>Accounts</th><th>Transactions</th><th></th></tr>";
  std::size_t shown = 0;
  for (const connection_summary& c : found.connections) {
    if (status && c.status != *status) continue;
    ++shown;
    body += connection_row(c, request, *tenant);
  }
  if (shown == 0) body += "<tr><td colspan=\"9\">No connections.</td></tr>";
  return {200, body + "</table>", {{*tenant, "console.plaid.connections.viewed", ""}}, {}};
}

// POST: a sync of one connection, as `connections sync` and the app's request_sync enqueue it.
admin_answer request_sync(db::pool& connections, const admin_request& request) {
  const auto tenant = core::uuid::parse(request.field("tenant").value_or(""));
  const auto connection = core::uuid::parse(request.field("connection").value_or(""));
  if (!tenant || !connection) return service::admin_refusal(400, "tenant and connection must be uuids");
  const bool known = db::with_tenant(connections, *tenant, [&](pqxx::work& tx) {
    for (const connection_summary& c : list_connections(tx, *tenant)) {
      if (c.connection == *connection) {
        enqueue_sync(tx, *tenant, *connection);
        return true;
      }
    }
    return false;
  });
  if (!known) return service::admin_refusal(404, "No connection " + connection->to_string() + " of tenant " + tenant->to_string() + ".");
  return {303, {}, {{*tenant, "console.plaid.sync_requested", connection->to_string()}},
          std::string(page_path) + "?tenant=" + tenant->to_string() + "&requested=1"};
}

std::string overview(db::pool& connections) {
  auto lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection());
  std::string html = "<h2>Bank connections (Plaid)</h2><table><tr><th>Status</th><th>Connections</th></tr>";
  for (const auto& row : tx.exec(connection_gauges_sql)) {
    html += "<tr>" + table_cell(row[0].as<std::string>()) + table_cell(std::to_string(row[1].as<std::int64_t>())) + "</tr>";
  }
  return html + "</table>";
}

}  // namespace

service::admin_page connections_console_page(db::pool& connections) {
  return {std::string(page_path), "Connections",
          [&connections](const admin_request& request) { return show(connections, request); },
          [&connections](const admin_request& request) { return request_sync(connections, request); },
          [&connections] { return overview(connections); }};
}

}  // namespace bankworker::plaid
