// The console's overview (aggregate counts and the worker processes: not a tenant read, not
// audited), the audit chain page (a tenant's chain verified on demand) and the reconciliation
// exceptions page.
#include <map>

#include "console/html.hpp"
#include "console/pages.hpp"
#include "crypto/envelope.hpp"
#include "db/audit.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/reconcile.hpp"
#include "queue/worker_processes.hpp"

namespace bankworker::console {

namespace {

constexpr std::size_t reconcile_page_rows_max = 200;
constexpr std::size_t process_rows_max = 200;

std::string cell(std::string_view text) { return service::table_cell(text); }

// The tenant a page was asked about: nothing when the field is empty (the page shows its form),
// 400 when it is not a uuid, 404 when there is no such tenant.
struct chosen_tenant {
  std::optional<core::uuid> tenant;
  std::optional<page_result> refusal;
  std::string heading;
};

chosen_tenant choose_tenant(const page_context& context, std::string_view title) {
  chosen_tenant chosen;
  const auto text = context.filled("tenant");
  if (!text) return chosen;
  chosen.tenant = core::uuid::parse(*text);
  if (!chosen.tenant) {
    chosen.refusal = error_page(400, title, "tenant must be a uuid, not '" + std::string(*text) + "'");
    return chosen;
  }
  const auto heading = tenant_heading(context.connections, *chosen.tenant);
  if (!heading) chosen.refusal = error_page(404, title, "No tenant " + chosen.tenant->to_string() + ".");
  else chosen.heading = *heading;
  return chosen;
}

std::string tenant_form(std::string_view action, std::string_view button, const std::optional<core::uuid>& tenant) {
  return "<form method=\"get\" action=\"" + std::string(action) + "\"><label>Tenant <input name=\"tenant\" value=\"" +
         escape_html(tenant ? tenant->to_string() : "") + "\" size=\"40\"></label><button type=\"submit\">" +
         std::string(button) + "</button></form>";
}

std::string job_counts(pqxx::transaction_base& tx) {
  // kind → state → (jobs, oldest due seconds)
  std::map<std::string, std::map<std::string, std::pair<std::int64_t, std::int64_t>>> counts;
  for (const auto& row : tx.exec(queue::job_gauges_sql)) {
    counts[row[0].as<std::string>()][row[1].as<std::string>()] = {row[2].as<std::int64_t>(), row[3].as<std::int64_t>()};
  }
  constexpr std::string_view states[] = {"available", "scheduled", "running", "retryable", "dead"};
  std::string html = "<h2>Jobs by kind and state</h2><table><tr><th>Kind</th>";
  for (const std::string_view state : states) html += "<th>" + std::string(state) + "</th>";
  html += "<th>Oldest due (s)</th></tr>";
  for (const auto& [kind, by_state] : counts) {
    html += "<tr>" + cell(kind);
    std::int64_t oldest = 0;
    for (const std::string_view state : states) {
      const auto found = by_state.find(std::string(state));
      const std::int64_t jobs = found == by_state.end() ? 0 : found->second.first;
      if (found != by_state.end()) oldest = std::max(oldest, found->second.second);
      const std::string link = "/console/jobs?state=" + std::string(state == "dead" ? "failed" : state == "scheduled" ? "available" : state) +
                               "&kind=" + service::url_encode(kind);
      html += jobs == 0 ? "<td>0</td>" : "<td><a href=\"" + escape_html(link) + "\">" + std::to_string(jobs) + "</a></td>";
    }
    html += cell(std::to_string(oldest)) + "</tr>";
  }
  if (counts.empty()) html += "<tr><td colspan=\"7\">No unfinished or dead jobs.</td></tr>";
  return html + "</table>";
}

std::string reconcile_counts(pqxx::transaction_base& tx) {
  std::string html = "<h2>Payout reconciliation</h2><table><tr><th>Status</th><th>Payouts</th></tr>";
  for (const auto& row : tx.exec(ledger::reconcile_gauges_sql)) {
    html += "<tr>" + cell(row[0].as<std::string>()) + cell(std::to_string(row[1].as<std::int64_t>())) + "</tr>";
  }
  return html + "</table>";
}

// The `bankworker run` processes (migration 0042): live ones first. Not tenant data.
std::string worker_processes(pqxx::transaction_base& tx) {
  std::string html = "<h2>Worker processes</h2><table><tr><th>Host</th><th>PID</th><th>Version</th><th>Started</th>"
                     "<th>Last heartbeat</th><th>State</th><th>Worker id</th></tr>";
  const auto processes = queue::list_worker_processes(tx, process_rows_max);
  for (const queue::worker_process_row& process : processes) {
    // A silent process is the one an operator looks for: it may hold leases until they expire.
    const std::string_view style = process.state == "alive" ? "ok" : process.state == "silent" ? "error" : "";
    html += "<tr>" + cell(process.hostname) + cell(std::to_string(process.pid)) + cell(process.version) +
            cell(process.started_at) + cell(std::to_string(process.heartbeat_age_s) + " s ago") +
            "<td class=\"" + std::string(style) + "\">" + escape_html(process.state) +
            (process.stopped_at ? " at " + escape_html(*process.stopped_at) : std::string()) + "</td>" +
            cell(process.process_id) + "</tr>";
  }
  if (processes.empty()) html += "<tr><td colspan=\"7\">No worker process has registered.</td></tr>";
  return html + "</table>";
}

}  // namespace

page_result overview_page(const page_context& context) {
  std::string body;
  {
    auto lease = context.connections.checkout();
    pqxx::read_transaction tx(lease.connection());
    body += job_counts(tx);
    body += reconcile_counts(tx);
    body += worker_processes(tx);
  }
  for (const service::admin_page& page : context.pages) {
    if (page.overview_html) body += page.overview_html();
  }
  return {200, "Overview", std::move(body), {}};
}

page_result audit_page(const page_context& context) {
  const chosen_tenant chosen = choose_tenant(context, "Audit chain");
  if (chosen.refusal) return *chosen.refusal;
  std::string body = tenant_form("/console/audit", "Verify", chosen.tenant);
  if (!chosen.tenant) return {200, "Audit chain", std::move(body), {}};
  const db::audit_verification verified = db::verify_audit_chain(context.connections, context.keys, *chosen.tenant);
  // Recorded after the verification, so the row names a chain that was read as it stood.
  context.audit(*chosen.tenant, "console.audit.verified", std::to_string(verified.rows));
  body += chosen.heading;
  if (verified.broken) {
    body += "<p class=\"error\">The chain is BROKEN at row " + std::to_string(verified.broken->seq) + ": " +
            escape_html(verified.broken->reason) + "</p>";
  } else {
    body += "<p class=\"ok\">" + std::to_string(verified.rows) + " rows verified; head " +
            escape_html(crypto::to_hex(verified.head)) + ".</p>";
  }
  return {200, "Audit chain", std::move(body), {}};
}

page_result reconcile_page(const page_context& context) {
  const chosen_tenant chosen = choose_tenant(context, "Reconciliation");
  if (chosen.refusal) return *chosen.refusal;
  std::string body = tenant_form("/console/reconcile", "Show exceptions", chosen.tenant);
  if (!chosen.tenant) return {200, "Reconciliation", std::move(body), {}};
  const auto payouts = db::with_tenant(context.connections, *chosen.tenant, [](pqxx::work& tx) {
    return ledger::list_payouts(tx, std::nullopt, reconcile_page_rows_max);
  });
  context.audit(*chosen.tenant, "console.reconcile.viewed", "");
  body += chosen.heading + "<table><tr><th>Payout</th><th>Status</th><th>Amount (minor)</th><th>Expected</th>"
                           "<th>Bank transaction</th><th>Difference</th><th>Reason</th></tr>";
  std::size_t shown = 0;
  for (const ledger::payout_row& payout : payouts) {
    if (payout.status == "matched") continue;  // exceptions only
    ++shown;
    body += "<tr>" + cell(payout.payout_id) + cell(payout.status) +
            cell(std::to_string(payout.amount_minor) + " " + payout.currency) + cell(payout.expected_on) +
            cell(payout.transaction_id) + cell(std::to_string(payout.difference_minor)) + cell(payout.reason) + "</tr>";
  }
  if (shown == 0) body += "<tr><td colspan=\"7\">No exceptions.</td></tr>";
  return {200, "Reconciliation", body + "</table>", {}};
}

}  // namespace bankworker::console
