// Stripe's webhook inbox page in the operator console (connectors/stripe/console_page.hpp). It
// reads bankworker.stripe_events itself (state, received_at, posted_at) and never shows an event's
// body: only its id, type and state. A failed (dead-lettered) event is posted again the way
// `bankworker stripe events retry` does it (posting_queue.hpp): back to received with its
// attempts cleared, where the posters take it from the inbox like a new one.
#include "connectors/stripe/console_page.hpp"

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/posting_queue.hpp"
#include "db/statement.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"

namespace bankworker::stripe {

namespace {

using service::admin_answer;
using service::admin_request;
using service::escape_html;

constexpr std::string_view page_path = "stripe/inbox";
constexpr int events_shown_max = 200;

constexpr db::statement recent_events{
    "stripe_console_recent_events",
    "SELECT event_id, type, state, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
    " coalesce(to_char(posted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '')"
    " FROM bankworker.stripe_events WHERE ($1 = '' OR state = $1)"
    " ORDER BY (state IN ('received', 'fetching', 'failed')) DESC, received_at DESC LIMIT 200"};

using service::table_cell;

std::string filter_form(std::string_view tenant, std::string_view state) {
  return "<form method=\"get\" action=\"/console/p/stripe/inbox\"><label>Tenant <input name=\"tenant\" size=\"40\" "
         "value=\"" + escape_html(tenant) + "\"></label><label>State <input name=\"state\" value=\"" +
         escape_html(state) + "\"></label><button type=\"submit\">Show</button></form>";
}

struct inbox_view {
  std::optional<ledger::tenant_summary> tenant;
  pqxx::result events;
};

admin_answer show(db::pool& connections, const admin_request& request) {
  const std::string_view tenant_text = request.field("tenant").value_or("");
  const std::string_view state = request.field("state").value_or("");
  if (!state.empty() && state != "received" && state != "fetching" && state != "posted" && state != "ignored" &&
      state != "failed") {
    return service::admin_refusal(400, "state must be received (unposted), fetching (with a stripe.post job), posted, "
                                       "ignored or failed");
  }
  if (tenant_text.empty()) return {200, filter_form("", state) + "<p>Give a tenant to see its inbox.</p>", {}, {}};
  const auto tenant = core::uuid::parse(tenant_text);
  if (!tenant) return service::admin_refusal(400, "tenant must be a uuid, not '" + std::string(tenant_text) + "'");
  const inbox_view view = db::with_tenant(connections, *tenant, [&](pqxx::work& tx) {
    inbox_view read{ledger::describe_tenant(tx), {}};
    if (read.tenant) {
      read.events = db::exec_statement(tx, recent_events, std::string(state));
    }
    return read;
  });
  if (!view.tenant) return service::admin_refusal(404, "No tenant " + tenant->to_string() + ".");
  std::string body = filter_form(tenant_text, state) + "<p>Tenant <strong>" + escape_html(view.tenant->name) +
                     "</strong> <code>" + tenant->to_string() + "</code></p>";
  if (request.field("reposted")) body += "<p class=\"ok\">Given back to the posters.</p>";
  body += "<p>Unposted and failed events first, then the newest; at most " + std::to_string(events_shown_max) +
          ".</p><table><tr><th>Event</th><th>Type</th><th>State</th><th>Received</th><th>Posted</th><th></th></tr>";
  for (const auto& row : view.events) {
    const std::string event_id = row[0].as<std::string>();
    body += "<tr>" + table_cell(event_id) + table_cell(row[1].as<std::string>()) + table_cell(row[2].as<std::string>()) +
            table_cell(row[3].as<std::string>()) + table_cell(row[4].as<std::string>()) + "<td>";
    if (row[2].as<std::string>() == "failed") {
      body += "<form method=\"post\" action=\"/console/p/stripe/inbox\">" + request.csrf_input +
              "<input type=\"hidden\" name=\"tenant\" value=\"" + tenant->to_string() +
              "\"><input type=\"hidden\" name=\"event\" value=\"" + escape_html(event_id) +
              "\"><button type=\"submit\">Post again</button></form>";
    }
    body += "</td></tr>";
  }
  if (view.events.empty()) body += "<tr><td colspan=\"6\">No events.</td></tr>";
  return {200, body + "</table>", {{*tenant, "console.stripe.inbox.viewed", std::string(state)}}, {}};
}

admin_answer repost(db::pool& connections, const admin_request& request) {
  const auto tenant = core::uuid::parse(request.field("tenant").value_or(""));
  const std::string event_id(request.field("event").value_or(""));
  if (!tenant || event_id.empty()) return service::admin_refusal(400, "tenant must be a uuid and event an event id");
  const bool reopened =
      db::with_tenant(connections, *tenant, [&](pqxx::work& tx) { return retry_failed_event(tx, event_id); });
  if (!reopened) return service::admin_refusal(404, "No failed event " + event_id + " of tenant " + tenant->to_string() + ".");
  return {303, {}, {{*tenant, "console.stripe.event.reposted", event_id}},
          std::string(page_path) + "?tenant=" + tenant->to_string() + "&reposted=1"};
}

std::string overview(db::pool& connections) {
  auto lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection());
  const auto row = tx.exec1(inbox_gauges_sql);
  return "<h2>Webhook inbox (Stripe)</h2><table><tr><th>Unposted events</th><th>Oldest unposted (s)</th></tr><tr>" +
         table_cell(std::to_string(row[0].as<std::int64_t>())) + table_cell(std::to_string(row[1].as<std::int64_t>())) +
         "</tr></table>";
}

}  // namespace

service::admin_page inbox_console_page(db::pool& connections) {
  return {std::string(page_path), "Webhook inbox",
          [&connections](const admin_request& request) { return show(connections, request); },
          [&connections](const admin_request& request) { return repost(connections, request); },
          [&connections] { return overview(connections); }};
}

}  // namespace bankworker::stripe
