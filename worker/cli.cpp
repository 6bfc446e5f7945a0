#include "worker/cli.hpp"

#include <sodium.h>

#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection>
#include <pqxx/except>

#include "core/json_text.hpp"
#include "db/migrate.hpp"
#include "db/pool.hpp"
#include "db/tenants.hpp"

namespace bankworker::worker {

namespace {

constexpr std::string_view usage_text =
    "usage: bankworker [--json] <command> [options]\n"
    "\n"
    "commands:\n"
    "  migrate                     apply pending database migrations\n"
    "  tenant create --name NAME   create a tenant and print its id\n"
    "\n"
    "options:\n"
    "  --json       machine-readable output\n"
    "  --help       this text\n"
    "  --version    the version\n"
    "\n"
    "environment: BANKWORKER_DATABASE_URL (required by migrate and tenant), BANKWORKER_LOG_LEVEL, …\n"
    "see README.md for every variable.\n";

// Thrown for bad usage; carries the one-line reason.
struct usage_error {
  std::string reason;
};

// A command's failure (not the user's usage): database unreachable, migration refused, …
struct command_error {
  std::string reason;
};

// libpq messages span several lines; a CLI error is one.
std::string one_line(std::string_view text) {
  std::string line;
  line.reserve(text.size());
  bool space = false;
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !line.empty();
      continue;
    }
    if (space) line.push_back(' ');
    space = false;
    line.push_back(c);
  }
  return line;
}

struct parsed_args {
  bool json = false;
  std::vector<std::string_view> words;  // positional words, options removed
  std::vector<std::pair<std::string_view, std::string_view>> options;  // --name VALUE

  std::optional<std::string_view> option(std::string_view name) const {
    for (const auto& [key, value] : options) {
      if (key == name) return value;
    }
    return std::nullopt;
  }
};

// Options that take a value; every other --flag is a switch.
bool takes_value(std::string_view option) { return option == "--name"; }

parsed_args parse(std::span<const std::string_view> args) {
  parsed_args parsed;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--json") {
      parsed.json = true;
    } else if (arg.starts_with("--") && arg.find('=') != std::string_view::npos) {
      const std::size_t equals = arg.find('=');
      const std::string_view name = arg.substr(0, equals);
      if (!takes_value(name)) throw usage_error{"option " + std::string(name) + " takes no value"};
      if (parsed.option(name)) throw usage_error{"option " + std::string(name) + " given twice"};
      parsed.options.emplace_back(name, arg.substr(equals + 1));
    } else if (takes_value(arg)) {
      if (i + 1 >= args.size()) throw usage_error{"option " + std::string(arg) + " needs a value"};
      if (parsed.option(arg)) throw usage_error{"option " + std::string(arg) + " given twice"};
      parsed.options.emplace_back(arg, args[++i]);
    } else if (arg == "--help" || arg == "-h" || arg == "--version") {
      parsed.words.push_back(arg);
    } else if (arg.starts_with("-")) {
      throw usage_error{"unknown option " + std::string(arg)};
    } else {
      parsed.words.push_back(arg);
    }
  }
  return parsed;
}

void expect_only(const parsed_args& parsed, std::size_t words, std::initializer_list<std::string_view> options) {
  if (parsed.words.size() > words) {
    throw usage_error{"unexpected argument '" + std::string(parsed.words[words]) + "'"};
  }
  for (const auto& [name, value] : parsed.options) {
    bool allowed = false;
    for (const std::string_view option : options) allowed = allowed || option == name;
    if (!allowed) throw usage_error{"option " + std::string(name) + " does not apply here"};
  }
}

// Loads and validates configuration; throws the collected problems as one exit.
struct config_error {
  std::vector<std::string> problems;
};

settings load_or_throw(const env_lookup& env, settings_needs needs) {
  settings_result loaded = load_settings(env, needs);
  if (!loaded.problems.empty()) throw config_error{std::move(loaded.problems)};
  return std::move(loaded.value);
}

std::unique_ptr<pqxx::connection> connect_as_login_user(const settings& config) {
  std::string url(config.database_url.reveal());
  try {
    auto connection = std::make_unique<pqxx::connection>(url);
    sodium_memzero(url.data(), url.size());
    return connection;
  } catch (const pqxx::broken_connection& error) {
    sodium_memzero(url.data(), url.size());
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  }
}

int command_migrate(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 1, {});
  const settings config = load_or_throw(env, {.database = true});
  const auto connection = connect_as_login_user(config);
  db::migration_report report;
  try {
    report = db::apply_migrations(*connection, db::embedded_migrations());
  } catch (const db::migration_error& error) {
    throw command_error{one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw command_error{"migration failed: " + one_line(error.what())};
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

  settings config = load_or_throw(env, {.database = true});
  db::pool_settings pool_config;
  pool_config.connections = 1;
  db::pool connections(std::move(config.database_url), std::move(pool_config));
  core::uuid tenant;
  try {
    tenant = db::create_tenant(connections, *name);
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    // 42P01 undefined table, 3F000 no such schema, 22023 SET ROLE to a role that does not exist.
    const std::string state = error.sqlstate();
    if (state == "42P01" || state == "3F000" || state == "22023") {
      throw command_error{"the database is not migrated (" + one_line(error.what()) +
                          "); run 'bankworker migrate' first"};
    }
    throw command_error{"tenant create failed: " + one_line(error.what())};
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

}  // namespace

int run_cli(std::span<const std::string_view> args, const env_lookup& env, std::ostream& out, std::ostream& err) {
  try {
    const parsed_args parsed = parse(args);
    if (parsed.words.empty()) throw usage_error{"no command given (see bankworker --help)"};
    const std::string_view command = parsed.words.front();
    if (command == "--help" || command == "-h" || command == "help") {
      out << usage_text;
      return exit_ok;
    }
    if (command == "--version") {
      out << "bankworker " << BANKWORKER_VERSION << '\n';
      return exit_ok;
    }
    if (command == "migrate") return command_migrate(parsed, env, out);
    if (command == "tenant") return command_tenant(parsed, env, out);
    throw usage_error{"unknown command '" + std::string(command) + "' (see bankworker --help)"};
  } catch (const usage_error& error) {
    err << "bankworker: " << error.reason << '\n';
    return exit_usage;
  } catch (const config_error& error) {
    for (const std::string& problem : error.problems) err << "bankworker: configuration: " << problem << '\n';
    return exit_config;
  } catch (const command_error& error) {
    err << "bankworker: " << error.reason << '\n';
    return exit_failed;
  } catch (const db::pool_timeout& error) {
    err << "bankworker: " << error.what() << '\n';
    return exit_failed;
  }
}

}  // namespace bankworker::worker
