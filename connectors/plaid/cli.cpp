// Bank connections from the command line (DESIGN.md §6): `plaid link --tenant T --public-token P
// [--wait]`, `connections list --tenant T`, `connections sync|revoke --tenant T --connection C
// [--wait]`. Each request goes through the same enqueue functions the customer's app reaches
// (bankworker.link_plaid, request_sync and request_revoke verify the app's scope token, then call
// enqueue_link_request, enqueue_sync_request and enqueue_revoke_request, which the worker calls
// directly under its own SET LOCAL scope).
// --wait polls the job until it finishes, at most wait_timeout, and prints its outcome; the exit
// status is 0 only when the job succeeded.

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "core/json_text.hpp"
#include "db/keys.hpp"
#include "connectors/plaid/store.hpp"
#include "db/statement.hpp"
#include "db/tenant_scope.hpp"
#include "connectors/plaid/cli.hpp"
#include "service/command.hpp"

namespace bankworker::plaid {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::tenant_option;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

constexpr auto wait_timeout = std::chrono::seconds(120);
constexpr auto wait_poll = std::chrono::milliseconds(100);
constexpr int exit_ok = 0;
constexpr int exit_job_unfinished = 1;  // the CLI's "command failed" status

constexpr db::statement job_outcome_sql{"plaid_cli_job_outcome",
    "SELECT state, failure, last_error FROM bankworker.job_outcome($1::uuid, $2::bigint)"};

struct job_outcome {
  std::string state;  // succeeded, failed, cancelled; "unknown" when the job is gone
  std::optional<std::string> failure;
  std::optional<std::string> last_error;
};

bool finished(std::string_view state) { return state == "succeeded" || state == "failed" || state == "cancelled"; }

std::optional<std::string> optional_text(const pqxx::field& field) {
  if (field.is_null()) return std::nullopt;
  return field.as<std::string>();
}

// Polls the job until it finished or wait_timeout passed.
std::optional<job_outcome> wait_for_job(db::pool& connections, const core::uuid& tenant, std::int64_t job_id) {
  const auto deadline = std::chrono::steady_clock::now() + wait_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto outcome = db::with_tenant(connections, tenant, [&](pqxx::work& tx) -> std::optional<job_outcome> {
      const pqxx::result rows = db::exec_statement(tx, job_outcome_sql, tenant.to_string(), job_id);
      if (rows.empty()) return job_outcome{"unknown", std::nullopt, std::nullopt};
      if (!finished(rows[0][0].as<std::string>())) return std::nullopt;
      return job_outcome{rows[0][0].as<std::string>(), optional_text(rows[0][1]), optional_text(rows[0][2])};
    });
    if (outcome) return outcome;
    std::this_thread::sleep_for(wait_poll);
  }
  return std::nullopt;
}

void append_optional(std::string& out, const std::optional<std::string>& value) {
  if (value) {
    core::append_json_string(*value, out);
  } else {
    out += "null";
  }
}

// Prints the job and, with --wait, its outcome; returns the exit status.
int report_job(const parsed_args& parsed, db::pool& connections, const core::uuid& tenant, std::int64_t job_id,
               std::string_view kind, std::ostream& out) {
  if (!parsed.flag("--wait")) {
    out << (parsed.json ? "{\"job_id\":" + std::to_string(job_id) + "}" : "job " + std::to_string(job_id)) << '\n';
    return exit_ok;
  }
  const std::optional<job_outcome> outcome = wait_for_job(connections, tenant, job_id);
  if (!outcome) {
    throw command_error{"job " + std::to_string(job_id) + " did not finish within " +
                        std::to_string(wait_timeout.count()) + " s (is `bankworker run` running?)"};
  }
  std::optional<std::string> connection;
  if (kind == "plaid.link" && outcome->state == "succeeded") {
    const auto linked = db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
      return plaid::connection_linked_by_job(tx, tenant, job_id);
    });
    if (linked) connection = linked->to_string();
  }
  if (parsed.json) {
    std::string text = "{\"job_id\":" + std::to_string(job_id) + ",\"state\":";
    core::append_json_string(outcome->state, text);
    text += ",\"failure\":";
    append_optional(text, outcome->failure);
    text += ",\"last_error\":";
    append_optional(text, outcome->last_error);
    if (kind == "plaid.link") {
      text += ",\"connection_id\":";
      append_optional(text, connection);
    }
    out << text << "}\n";
  } else {
    out << "job " << job_id << ' ' << outcome->state;
    if (connection) out << " connection " << *connection;
    if (outcome->last_error && outcome->state != "succeeded") out << ": " << *outcome->last_error;
    out << '\n';
  }
  return outcome->state == "succeeded" ? exit_ok : exit_job_unfinished;
}

core::uuid connection_option(const parsed_args& parsed) {
  const auto text = parsed.option("--connection");
  const auto id = text ? core::uuid::parse(*text) : std::nullopt;
  if (!id) throw usage_error{"--connection C (a uuid) is required"};
  return *id;
}

// Enqueues through `enqueue` (store.hpp) in the tenant's scope; the job's id.
template <class Enqueue>
std::int64_t request(db::pool& connections, const core::uuid& tenant, Enqueue enqueue) {
  return db::with_tenant(connections, tenant, [&](pqxx::work& tx) { return enqueue(tx); });
}

void append_connection_json(const core::uuid& tenant, const plaid::connection_summary& row, std::string& text) {
  text += "{\"tenant_id\":";
  core::append_json_string(tenant.to_string(), text);
  text += ",\"connection_id\":";
  core::append_json_string(row.connection.to_string(), text);
  text += ",\"status\":";
  core::append_json_string(to_string(row.status), text);
  text += ",\"item_id\":";
  append_optional(text, row.item_id);
  text += ",\"institution_id\":";
  append_optional(text, row.institution_id);
  text += ",\"last_synced_at\":";
  append_optional(text, row.last_synced_at);
  text += ",\"next_sync_at\":";
  append_optional(text, row.next_sync_at);
  text += ",\"last_error\":";
  append_optional(text, row.last_error);
  text += ",\"revoking_since\":";
  append_optional(text, row.revoking_since);
  text += ",\"accounts\":" + std::to_string(row.accounts) + ",\"transactions\":" + std::to_string(row.transactions) +
          ",\"quarantined\":" + std::to_string(row.quarantined) + "}";
}

// `connections list [--tenant T] [--status S]`: one tenant's connections, or every tenant's (each
// line then starts with the tenant), optionally of one status only.
void list(const parsed_args& parsed, db::pool& connections, std::ostream& out) {
  const std::optional<std::string_view> status_text = parsed.option("--status");
  const std::optional<connection_status> status =
      status_text ? parse_connection_status(*status_text) : std::nullopt;
  if (status_text && !status) {
    throw usage_error{"--status must be linking, active, needs_reauth, broken, revoking or revoked"};
  }
  const bool across = !parsed.option("--tenant");
  const std::vector<core::uuid> tenants = across ? db::list_tenants(connections) : std::vector{tenant_option(parsed)};
  std::string text = "[";
  for (const core::uuid& tenant : tenants) {
    const auto rows =
        db::with_tenant(connections, tenant, [&](pqxx::work& tx) { return plaid::list_connections(tx, tenant); });
    for (const plaid::connection_summary& row : rows) {
      if (status && row.status != *status) continue;
      if (parsed.json) {
        if (text.size() > 1) text += ',';
        append_connection_json(tenant, row, text);
        continue;
      }
      if (across) out << tenant.to_string() << ' ';
      out << row.connection.to_string() << ' ' << to_string(row.status) << " accounts=" << row.accounts
          << " transactions=" << row.transactions << " last_synced_at=" << row.last_synced_at.value_or("-");
      // A revocation Plaid has not confirmed: since when, and Plaid's last answer (no token in it).
      if (row.revoking_since) out << " revoking_since=" << *row.revoking_since << " last_error=" << row.last_error.value_or("-");
      // Rows set aside for their money (issue #16): they apply once their currency is declared.
      if (row.quarantined > 0) out << " quarantined=" << row.quarantined;
      out << '\n';
    }
  }
  if (parsed.json) out << text << "]\n";
}

}  // namespace

int command_plaid(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  if (parsed.words.size() < 2 || parsed.words[1] != "link") {
    throw usage_error{"expected 'plaid link --tenant T --public-token P [--wait]'"};
  }
  expect_only(parsed, 2, {"--tenant", "--public-token", "--wait"});
  const core::uuid tenant = tenant_option(parsed);
  const auto public_token = parsed.option("--public-token");
  if (!public_token || public_token->empty()) throw usage_error{"plaid link needs --public-token P"};
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  try {
    const std::int64_t job = request(*connections, tenant, [&](pqxx::work& tx) {
      return enqueue_link(tx, tenant, std::string(*public_token));
    });
    return report_job(parsed, *connections, tenant, job, "plaid.link", out);
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("plaid link", error);
  }
}

int command_connections(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view action = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view{};
  if (action != "list" && action != "sync" && action != "revoke") {
    throw usage_error{"expected 'connections list [--tenant T] [--status S]' or 'connections sync|revoke --tenant T --connection C [--wait]'"};
  }
  if (action == "list") {
    expect_only(parsed, 2, {"--tenant", "--status"});
    if (parsed.option("--tenant")) tenant_option(parsed);  // a bad uuid is bad usage, before connecting
    settings config = load_or_throw(env, {.database = true});
    const auto connections = open_worker_pool(config);
    try {
      list(parsed, *connections, out);
      return exit_ok;
    } catch (const pqxx::sql_error& error) {
      throw_database_failure("connections list", error);
    }
  }
  expect_only(parsed, 2, {"--tenant", "--connection", "--wait"});
  const core::uuid tenant = tenant_option(parsed);
  const core::uuid connection = connection_option(parsed);
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  try {
    const bool sync = action == "sync";
    const std::int64_t job = request(*connections, tenant, [&](pqxx::work& tx) {
      return sync ? enqueue_sync(tx, tenant, connection) : enqueue_revoke(tx, tenant, connection);
    });
    return report_job(parsed, *connections, tenant, job, sync ? "plaid.sync" : "plaid.revoke", out);
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("connections " + std::string(action), error);
  }
}

}  // namespace bankworker::plaid
