// Schema and tenant commands: `migrate`, `tenant create`, `tenant list`.
#include <algorithm>
#include <string>
#include <vector>

#include "core/json_text.hpp"
#include "db/keys.hpp"
#include "db/migrate.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "worker/cli.hpp"
#include "service/command.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::login_use;
using service::connect_as_login_user;
using service::open_worker_pool;
using service::open_key_store;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

void print_names(std::string_view key, const std::vector<std::string>& names, std::string& text) {
  core::append_json_string(key, text);
  text += ":[";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) text.push_back(',');
    core::append_json_string(names[i], text);
  }
  text += "]";
}

// `migrate --dry-run` and `migrate --status`: what the database has and what this binary would
// apply, read in one read-only transaction; nothing is created or changed. An edited or unknown
// applied migration is refused exactly as `migrate` would refuse it.
int report_migrations(const parsed_args& parsed, pqxx::connection& connection, std::ostream& out) {
  const auto migrations = db::embedded_migrations();
  std::vector<std::string> pending;
  try {
    pending = db::pending_migrations(connection, migrations);
  } catch (const db::migration_error& error) {
    throw command_error{one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("reading the applied migrations", error);
  }
  std::vector<std::string> applied;
  for (const db::migration& m : migrations) {
    if (std::find(pending.begin(), pending.end(), m.name) == pending.end()) applied.emplace_back(m.name);
  }
  const bool dry_run = parsed.flag("--dry-run");
  if (parsed.json) {
    std::string text = "{";
    print_names(dry_run ? "would_apply" : "pending", pending, text);
    text += ",";
    print_names("applied", applied, text);
    text += ",\"migrations\":" + std::to_string(migrations.size()) + "}";
    out << text << '\n';
    return exit_ok;
  }
  if (dry_run) {
    for (const std::string& name : pending) out << "would apply " << name << '\n';
    out << pending.size() << " of " << migrations.size() << " migrations would apply; nothing was changed\n";
    return exit_ok;
  }
  for (const db::migration& m : migrations) {
    const bool waiting = std::find(pending.begin(), pending.end(), m.name) != pending.end();
    out << (waiting ? "pending " : "applied ") << m.name << '\n';
  }
  if (pending.empty()) out << "schema current: " << migrations.size() << " migrations applied\n";
  else out << "schema behind: " << pending.size() << " of " << migrations.size() << " migrations pending\n";
  return exit_ok;
}

}  // namespace

int command_migrate(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 1, {"--dry-run", "--status"});
  if (parsed.flag("--dry-run") && parsed.flag("--status")) throw usage_error{"migrate takes --dry-run or --status, not both"};
  const settings config = load_or_throw(env, {.database = true, .migrate = true});
  const auto connection = connect_as_login_user(config, login_use::migration);
  if (parsed.flag("--dry-run") || parsed.flag("--status")) return report_migrations(parsed, *connection, out);
  db::migration_report report;
  try {
    report = db::apply_migrations(*connection, db::embedded_migrations());
  } catch (const db::migration_error& error) {
    throw command_error{one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("migration", error);
  }
  const std::size_t total = db::embedded_migrations().size();
  if (parsed.json) {
    std::string text = "{";
    print_names("applied", report.applied, text);
    text += ",\"already_applied\":" + std::to_string(report.already_applied) +
            ",\"migrations\":" + std::to_string(total) + "}";
    out << text << '\n';
  } else {
    for (const std::string& name : report.applied) out << "applied " << name << '\n';
    out << "schema current: " << total << " migrations, " << report.applied.size() << " applied now\n";
  }
  return exit_ok;
}

namespace {

// `tenant list`: every tenant, each read in its own scope (the runtime login sees tenant rows only
// there); no root key needed.
int list_tenants(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {});
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  std::string text = "{\"tenants\":[";
  try {
    for (const core::uuid& tenant : db::list_tenants(*connections)) {
      const auto found = db::with_tenant(*connections, tenant, [](pqxx::work& tx) { return ledger::describe_tenant(tx); });
      if (!found) continue;  // deleted between the two reads
      if (!parsed.json) {
        out << found->id.to_string() << ' ' << found->status << " created_at=" << found->created_at
            << " connections=" << found->connections << " name=" << found->name << '\n';
        continue;
      }
      if (text.back() != '[') text.push_back(',');
      text += "{\"tenant_id\":\"" + found->id.to_string() + "\",\"name\":";
      core::append_json_string(found->name, text);
      text += ",\"status\":";
      core::append_json_string(found->status, text);
      text += ",\"created_at\":";
      core::append_json_string(found->created_at, text);
      text += ",\"connections\":" + std::to_string(found->connections) + "}";
    }
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("tenant list", error);
  }
  if (parsed.json) out << text << "]}\n";
  return exit_ok;
}

}  // namespace

int command_tenant(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  if (parsed.words.size() >= 2 && parsed.words[1] == "list") return list_tenants(parsed, env, out);
  if (parsed.words.size() < 2 || parsed.words[1] != "create") {
    throw usage_error{"expected 'tenant create --name NAME' or 'tenant list'"};
  }
  expect_only(parsed, 2, {"--name"});
  const std::optional<std::string_view> name = parsed.option("--name");
  if (!name) throw usage_error{"tenant create needs --name NAME"};
  if (auto why = ledger::check_tenant_name(*name)) throw usage_error{*why};

  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  core::uuid tenant;
  try {
    tenant = ledger::create_tenant(*connections, *keys, *name);
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("tenant create", error);
  }
  if (parsed.json) {
    std::string text = "{\"tenant_id\":";
    core::append_json_string(tenant.to_string(), text);
    text += ",\"name\":";
    core::append_json_string(*name, text);
    out << text << "}\n";
  } else {
    out << tenant.to_string() << '\n';
  }
  return exit_ok;
}

}  // namespace bankworker::worker
