// Schema and tenant commands: `migrate`, `tenant create`.
#include <string>

#include "core/json_text.hpp"
#include "db/migrate.hpp"
#include "db/tenants.hpp"
#include "worker/cli.hpp"
#include "worker/cli_support.hpp"

namespace bankworker::worker {

int command_migrate(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 1, {});
  const settings config = load_or_throw(env, {.database = true, .migrate = true});
  const auto connection = connect_as_login_user(config, login_use::migration);
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
    std::string text = "{\"applied\":[";
    for (std::size_t i = 0; i < report.applied.size(); ++i) {
      if (i > 0) text.push_back(',');
      core::append_json_string(report.applied[i], text);
    }
    text += "],\"already_applied\":" + std::to_string(report.already_applied) +
            ",\"migrations\":" + std::to_string(total) + "}";
    out << text << '\n';
  } else {
    for (const std::string& name : report.applied) out << "applied " << name << '\n';
    out << "schema current: " << total << " migrations, " << report.applied.size() << " applied now\n";
  }
  return exit_ok;
}

int command_tenant(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  if (parsed.words.size() < 2 || parsed.words[1] != "create") {
    throw usage_error{"expected 'tenant create --name NAME'"};
  }
  expect_only(parsed, 2, {"--name"});
  const std::optional<std::string_view> name = parsed.option("--name");
  if (!name) throw usage_error{"tenant create needs --name NAME"};
  if (auto why = db::check_tenant_name(*name)) throw usage_error{*why};

  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  core::uuid tenant;
  try {
    tenant = db::create_tenant(*connections, *keys, *name);
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
