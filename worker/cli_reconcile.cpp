// `bankworker reconcile map|list|run`: bank account mappings, payouts' reconciliation status, and a
// reconciliation run on demand (ledger/reconcile.hpp holds the rules and the SQL).
#include <charconv>

#include "core/json_text.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/reconcile.hpp"
#include "service/command.hpp"
#include "worker/cli.hpp"

namespace bankworker::worker {

using service::command_error;
using service::env_lookup;
using service::expect_only;
using service::load_or_throw;
using service::one_line;
using service::open_key_store;
using service::open_worker_pool;
using service::parsed_args;
using service::settings;
using service::tenant_option;
using service::throw_database_failure;
using service::usage_error;

namespace {

std::int64_t tolerance_option(const parsed_args& parsed) {
  const std::string_view text = parsed.option("--tolerance-minor").value_or("0");
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < 0) {
    throw usage_error{"--tolerance-minor must be a non-negative number of minor units"};
  }
  return value;
}

int map_account(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant", "--plaid-account", "--ledger-account", "--tolerance-minor"});
  const core::uuid tenant = tenant_option(parsed);
  const auto plaid_account = parsed.option("--plaid-account");
  if (!plaid_account) throw usage_error{"reconcile map needs --plaid-account A"};
  const std::string_view ledger_account = parsed.option("--ledger-account").value_or("bank");
  const std::int64_t tolerance = tolerance_option(parsed);
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  try {
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      ledger::map_bank_account(tx, *keys, tenant, *plaid_account, ledger_account, tolerance, "cli");
    });
  } catch (const std::invalid_argument& error) {
    throw command_error{error.what()};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("reconcile map", error);
  }
  out << (parsed.json ? "{\"mapped\":true}\n" : "mapped\n");
  return exit_ok;
}

void print_row(const ledger::payout_row& row, bool json, std::ostream& out, bool& first) {
  if (!json) {
    out << row.tenant_id << ' ' << row.payout_id << ' ' << row.status << ' ' << row.amount_minor << ' ' << row.currency
        << " expected_on=" << row.expected_on;
    if (!row.transaction_id.empty()) out << " transaction=" << row.transaction_id;
    if (row.difference_minor != 0) out << " difference_minor=" << row.difference_minor;
    for (const std::string& candidate : row.candidates) out << " candidate=" << candidate;
    out << " reason=" << row.reason << '\n';
    return;
  }
  std::string text = first ? "" : ",";
  first = false;
  text += "{\"tenant_id\":\"" + row.tenant_id + "\",\"payout_id\":";
  core::append_json_string(row.payout_id, text);
  text += ",\"status\":\"" + row.status + "\",\"amount_minor\":" + std::to_string(row.amount_minor) + ",\"currency\":";
  core::append_json_string(row.currency, text);
  text += ",\"expected_on\":\"" + row.expected_on + "\",\"transaction_id\":";
  if (row.transaction_id.empty()) text += "null";
  else core::append_json_string(row.transaction_id, text);
  text += ",\"difference_minor\":" + std::to_string(row.difference_minor) + ",\"candidates\":[";
  for (std::size_t i = 0; i < row.candidates.size(); ++i) {
    if (i > 0) text.push_back(',');
    core::append_json_string(row.candidates[i], text);
  }
  text += "],\"reason\":";
  core::append_json_string(row.reason, text);
  out << text << '}';
}

// Every tenant's payouts (or one tenant's), each tenant read in its own scope.
int list_payouts(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant", "--status"});
  std::optional<ledger::payout_status> status;
  if (const auto text = parsed.option("--status")) {
    status = ledger::parse_payout_status(*text);
    if (!status) throw usage_error{"--status must be pending, matched, short, missing, review, conflict or failed"};
  }
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  bool first = true;
  if (parsed.json) out << "{\"payouts\":[";
  try {
    const std::vector<core::uuid> tenants =
        parsed.option("--tenant") ? std::vector<core::uuid>{tenant_option(parsed)} : db::list_tenants(*connections);
    for (const core::uuid& tenant : tenants) {
      const auto rows = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        return ledger::list_payouts(tx, status, ledger::payout_list_rows_max);
      });
      for (const ledger::payout_row& row : rows) print_row(row, parsed.json, out, first);
    }
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("reconcile list", error);
  }
  if (parsed.json) out << "]}\n";
  return exit_ok;
}

int run_now(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant"});
  const core::uuid tenant = tenant_option(parsed);
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  ledger::reconcile_report report;
  try {
    report = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return ledger::reconcile_tenant(tx, *keys, tenant, {}, std::nullopt, "cli");
    });
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("reconcile run", error);
  }
  if (parsed.json) {
    out << "{\"payouts_examined\":" << report.payouts_examined << ",\"changed\":" << report.changed
        << ",\"relinked\":" << report.relinked << ",\"unmatched\":" << report.unmatched << "}\n";
  } else {
    out << "examined " << report.payouts_examined << " payouts, " << report.changed << " changed ("
        << report.relinked << " pending→posted, " << report.unmatched << " unmatched by removal)\n";
  }
  return exit_ok;
}

}  // namespace

int command_reconcile(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view verb = parsed.words.size() >= 2 ? parsed.words[1] : "";
  if (verb == "map") return map_account(parsed, env, out);
  if (verb == "list") return list_payouts(parsed, env, out);
  if (verb == "run") return run_now(parsed, env, out);
  throw usage_error{"expected 'reconcile map', 'reconcile list' or 'reconcile run'"};
}

}  // namespace bankworker::worker
