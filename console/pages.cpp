// The console's generic pages (console/pages.hpp): overview, jobs (list, detail, retry and cancel,
// one or all matching a filter), the audit chain, reconciliation exceptions. The job queue's own
// functions (queue/queue.hpp, as `bankworker jobs` uses them) do the work; this file only reads
// filters, audits, and renders.
#include "console/pages.hpp"

#include <set>

#include "console/html.hpp"
#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "crypto/envelope.hpp"
#include "crypto/redact.hpp"
#include "db/audit.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/reconcile.hpp"
#include "ledger/tenants.hpp"

namespace bankworker::console {

namespace {

constexpr std::size_t jobs_page_rows_max = 100;
constexpr std::size_t bulk_jobs_max = 1'000;

std::string escaped(std::string_view text) { return escape_html(text); }

std::string cell(std::string_view text) { return service::table_cell(text); }

// A filter a page could not read: 400 with the reason on the page.
struct bad_filter {
  std::string reason;
};

struct job_filter {
  std::optional<queue::job_state> state;
  std::optional<std::string> kind;
  std::optional<core::uuid> tenant;
};

bool kind_text_ok(std::string_view kind) {
  if (kind.empty() || kind.size() > limits::job_kind_bytes_max) return false;
  for (const char c : kind) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
  }
  return true;
}

job_filter read_job_filter(const page_context& context) {
  job_filter filter;
  if (const auto state = context.filled("state")) {
    filter.state = queue::parse_job_state_name(*state);
    if (!filter.state) {
      throw bad_filter{"state must be available, running, retryable, succeeded, failed or cancelled (or dead, retried), "
                       "not '" + std::string(*state) + "'"};
    }
  }
  if (const auto kind = context.filled("kind")) {
    if (!kind_text_ok(*kind)) throw bad_filter{"kind must be lowercase letters, digits, '_' and '.', at most 64 bytes"};
    filter.kind = std::string(*kind);
  }
  if (const auto tenant = context.filled("tenant")) {
    filter.tenant = core::uuid::parse(*tenant);
    if (!filter.tenant) throw bad_filter{"tenant must be a uuid, not '" + std::string(*tenant) + "'"};
  }
  return filter;
}

std::string filter_query(const job_filter& filter) {
  std::string query;
  const auto add = [&](std::string_view name, std::string_view value) {
    query += query.empty() ? "?" : "&";
    query += std::string(name) + "=" + service::url_encode(value);
  };
  if (filter.state) add("state", queue::to_string(*filter.state));
  if (filter.kind) add("kind", *filter.kind);
  if (filter.tenant) add("tenant", filter.tenant->to_string());
  return query;
}

std::string filter_fields(const job_filter& filter, bool hidden) {
  const auto input = [&](std::string_view name, std::string_view value, std::string_view label) {
    if (hidden) return "<input type=\"hidden\" name=\"" + std::string(name) + "\" value=\"" + escaped(value) + "\">";
    return "<label>" + std::string(label) + " <input name=\"" + std::string(name) + "\" value=\"" + escaped(value) +
           "\"></label>";
  };
  return input("state", filter.state ? queue::to_string(*filter.state) : "", "State") +
         input("kind", filter.kind.value_or(""), "Kind") +
         input("tenant", filter.tenant ? filter.tenant->to_string() : "", "Tenant");
}

std::string job_rows(const std::vector<queue::job_summary>& jobs, bool with_errors) {
  std::string html = "<table><tr><th>Job</th><th>Tenant</th><th>Kind</th><th>State</th><th>Attempt</th>"
                     "<th>Run at</th><th>Failure</th>";
  if (with_errors) html += "<th>Last error</th>";
  html += "</tr>";
  for (const queue::job_summary& job : jobs) {
    const std::string id = std::to_string(job.id);
    html += "<tr><td><a href=\"/console/jobs/" + id + "\">" + id + "</a></td>" + cell(job.tenant.to_string()) +
            cell(job.kind) + cell(queue::to_string(job.state)) +
            cell(std::to_string(job.attempt) + "/" + std::to_string(job.attempts_max)) + cell(job.run_at) +
            cell(job.failure.value_or(""));
    if (with_errors) html += cell(job.last_error ? crypto::redact(*job.last_error) : "");
    html += "</tr>";
  }
  return html + "</table>";
}

// A bulk change's action (true: retry), refused unless the filter names at least one of state,
// kind, tenant: an empty filter must not change the world.
bool read_bulk_action(const page_context& context, const job_filter& filter) {
  const auto action = context.field("action");
  if (!action || (*action != "retry" && *action != "cancel")) throw bad_filter{"action must be retry or cancel"};
  if (!filter.state && !filter.kind && !filter.tenant) throw bad_filter{"give at least one of state, kind, tenant"};
  return *action == "retry";
}

page_result with_bad_filter(std::string_view title, const std::function<page_result()>& page) {
  try {
    return page();
  } catch (const bad_filter& bad) {
    return error_page(400, title, bad.reason);
  }
}

}  // namespace

std::optional<std::string_view> page_context::field(std::string_view name) const {
  for (const auto& [key, value] : fields) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::optional<std::string_view> page_context::filled(std::string_view name) const {
  const auto value = field(name);
  if (!value || value->empty()) return std::nullopt;
  return value;
}

void page_context::audit(const core::uuid& tenant, std::string_view action, std::string_view subject) const {
  const std::string actor = "operator:" + who.operator_name;
  std::string details = "{\"operator_id\":";
  core::append_json_string(who.operator_id.to_string(), details);
  details += ",\"via\":\"console\"}";
  db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
    db::append_audit(tx, keys, db::audit_event{tenant, actor, action, subject, details});
  });
}

std::string page_context::csrf_input() const { return console::csrf_input(who.csrf_token); }

page_result error_page(unsigned status, std::string_view title, std::string_view reason) {
  return {status, std::string(title), "<p class=\"error\">" + escaped(reason) + "</p>", {}};
}

std::optional<std::string> tenant_heading(db::pool& connections, const core::uuid& tenant) {
  const auto found = db::with_tenant(connections, tenant, [](pqxx::work& tx) { return ledger::describe_tenant(tx); });
  if (!found) return std::nullopt;
  return "<p>Tenant <strong>" + escaped(found->name) + "</strong> <code>" + escaped(found->id.to_string()) +
         "</code> (" + escaped(found->status) + ")</p>";
}

page_result jobs_page(const page_context& context) {
  return with_bad_filter("Jobs", [&] {
    const job_filter filter = read_job_filter(context);
    const std::vector<queue::job_summary> jobs = context.jobs.list(
        queue::list_filter{.state = filter.state, .kind = filter.kind, .tenant = filter.tenant, .limit = jobs_page_rows_max});
    std::string body = "<form method=\"get\" action=\"/console/jobs\">" + filter_fields(filter, false) +
                       "<button type=\"submit\">Filter</button></form>";
    // One tenant's jobs, with their errors, are that tenant's data; the list across tenants shows
    // the queue's own bookkeeping only (no error text, no payload), like the gauges.
    if (filter.tenant) {
      const auto heading = tenant_heading(context.connections, *filter.tenant);
      if (!heading) return error_page(404, "Jobs", "No tenant " + filter.tenant->to_string() + ".");
      context.audit(*filter.tenant, "console.jobs.listed", filter_query(filter));
      body += *heading;
    }
    if (const auto changed = context.field("changed")) {
      body += "<p class=\"ok\">" + escaped(*changed) + " job(s) changed.</p>";
    }
    body += "<p>" + std::to_string(jobs.size()) + " job(s) shown (at most " + std::to_string(jobs_page_rows_max) +
            ", newest first).</p>" + job_rows(jobs, filter.tenant.has_value());
    if (filter.state || filter.kind || filter.tenant) {
      const std::string query = filter_query(filter);
      body += "<p><a href=\"/console/jobs/confirm" + escaped(query) + "&amp;action=retry\">Retry all matching…</a> · "
              "<a href=\"/console/jobs/confirm" + escaped(query) + "&amp;action=cancel\">Cancel all matching…</a></p>";
    }
    return page_result{200, "Jobs", std::move(body), {}};
  });
}

page_result job_page(const page_context& context, std::int64_t job_id) {
  const auto details = context.jobs.details(job_id);
  if (!details) return error_page(404, "Not found", "No job " + std::to_string(job_id) + ".");
  const queue::job_summary& job = details->summary;
  const std::string id = std::to_string(job.id);
  const auto heading = tenant_heading(context.connections, job.tenant);
  context.audit(job.tenant, "console.job.viewed", id);
  std::string body = heading.value_or("");
  body += "<table>";
  const auto row = [&](std::string_view name, std::string_view value) {
    body += "<tr><th>" + std::string(name) + "</th>" + cell(value) + "</tr>";
  };
  row("State", queue::to_string(job.state));
  row("Kind", job.kind);
  row("Attempt", std::to_string(job.attempt) + " of " + std::to_string(job.attempts_max));
  row("In doubt", details->in_doubt ? "yes" : "no");
  row("Created", job.created_at);
  row("Run at", job.run_at);
  row("Started", details->started_at.value_or("-"));
  row("Finished", job.finished_at.value_or("-"));
  row("Connection", details->connection.value_or("-"));
  row("Unique key", details->unique_key.value_or("-"));
  row("Failure", job.failure.value_or("-"));
  body += "</table><h2>Last attempt's error</h2><pre>" +
          escaped(job.last_error ? crypto::redact(*job.last_error) : "(none)") + "</pre>";
  // Every attempt that did not succeed (migration 0039), newest first; errors stored redacted.
  body += "<h2>Attempts that failed</h2><table><tr><th>Attempt</th><th>Outcome</th><th>Finished</th><th>Worker</th>"
          "<th>Error</th></tr>";
  for (const queue::job_attempt& attempt : details->attempts) {
    body += "<tr>" + cell(std::to_string(attempt.attempt)) + cell(attempt.outcome) + cell(attempt.finished_at) +
            cell(attempt.worker.value_or("-")) + cell(attempt.error ? crypto::redact(*attempt.error) : "") + "</tr>";
  }
  body += "</table>";
  // The payload is the one field that may carry a secret (a public token, a key): masked always.
  body += "<h2>Payload (secrets masked)</h2><pre>" + escaped(crypto::redact(details->payload)) + "</pre>";
  const bool retryable = job.state == queue::job_state::failed || job.state == queue::job_state::cancelled ||
                         job.state == queue::job_state::retryable;
  const bool cancellable = job.state == queue::job_state::available || job.state == queue::job_state::retryable ||
                           job.state == queue::job_state::running;
  for (const auto& [allowed, verb, label] : {std::tuple{retryable, "retry", "Retry"}, std::tuple{cancellable, "cancel", "Cancel"}}) {
    if (!allowed) continue;
    body += "<form class=\"inline\" method=\"post\" action=\"/console/jobs/" + id + "/" + verb + "\">" +
            context.csrf_input() + "<button type=\"submit\">" + label + " job " + id + "</button></form> ";
  }
  return {200, "Job " + id, std::move(body), {}};
}

page_result job_change(const page_context& context, std::int64_t job_id, bool retry) {
  const auto details = context.jobs.details(job_id);
  if (!details) return error_page(404, "Not found", "No job " + std::to_string(job_id) + ".");
  const std::string id = std::to_string(job_id);
  // Before the change: an action that cannot be recorded does not happen.
  context.audit(details->summary.tenant, retry ? "console.job.retried" : "console.job.cancelled", id);
  const auto change = retry ? context.jobs.retry(job_id) : context.jobs.cancel(job_id);
  if (!change) return error_page(404, "Not found", "No job " + id + ".");
  if (!change->changed) {
    return error_page(409, "Job " + id,
                      "Job " + id + " is " + std::string(queue::to_string(change->state)) + "; only " +
                          (retry ? "failed, cancelled or retryable" : "unfinished") + " jobs can be " +
                          (retry ? "retried." : "cancelled."));
  }
  return {303, {}, {}, "/console/jobs/" + id};
}

page_result jobs_confirm_page(const page_context& context) {
  return with_bad_filter("Confirm", [&] {
    const job_filter filter = read_job_filter(context);
    const bool retry = read_bulk_action(context, filter);
    const std::string_view action = retry ? "retry" : "cancel";
    const auto matched = context.jobs.change_many(
        retry, queue::change_filter{.state = filter.state, .kind = filter.kind, .tenant = filter.tenant,
                                    .limit = bulk_jobs_max, .dry_run = true});
    std::string body = "<p>This will " + std::string(action) + " <strong>" + std::to_string(matched.size()) +
                       "</strong> job(s)" + (matched.size() == bulk_jobs_max ? " (the first 1000 matching)" : "") +
                       " matching " + escaped(filter_query(filter)) + ".</p>";
    body += "<form method=\"post\" action=\"/console/jobs/bulk\">" + context.csrf_input() + filter_fields(filter, true) +
            "<input type=\"hidden\" name=\"action\" value=\"" + std::string(action) + "\"><button type=\"submit\">" +
            (retry ? "Retry " : "Cancel ") + std::to_string(matched.size()) + " job(s)</button></form>" +
            "<p><a href=\"/console/jobs" + escaped(filter_query(filter)) + "\">Back</a></p>";
    return page_result{200, "Confirm", std::move(body), {}};
  });
}

page_result jobs_bulk_change(const page_context& context) {
  return with_bad_filter("Jobs", [&] {
    const job_filter filter = read_job_filter(context);
    const bool retry = read_bulk_action(context, filter);
    queue::change_filter change{.state = filter.state, .kind = filter.kind, .tenant = filter.tenant,
                                .limit = bulk_jobs_max, .dry_run = true};
    // Each tenant whose jobs change gets its row first, and then only that tenant's jobs change
    // (one statement per tenant): a job of another tenant that starts matching meanwhile is left
    // for the next confirmation.
    std::set<std::string> tenants;
    for (const queue::matched_job& job : context.jobs.change_many(retry, change)) tenants.insert(job.tenant.to_string());
    std::size_t changed = 0;
    for (const std::string& tenant_text : tenants) {
      const core::uuid tenant = *core::uuid::parse(tenant_text);
      context.audit(tenant, retry ? "console.jobs.retried" : "console.jobs.cancelled", filter_query(filter));
      change.tenant = tenant;
      change.dry_run = false;
      for (const queue::matched_job& job : context.jobs.change_many(retry, change)) changed += job.changed ? 1 : 0;
    }
    const std::string query = filter_query(filter);
    return page_result{303, {}, {}, "/console/jobs" + query + (query.empty() ? "?" : "&") + "changed=" + std::to_string(changed)};
  });
}

}  // namespace bankworker::console
