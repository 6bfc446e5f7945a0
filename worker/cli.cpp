#include "worker/cli.hpp"

#include <string>

#include "worker/cli_support.hpp"

namespace bankworker::worker {

namespace {

constexpr std::string_view usage_text =
    "usage: bankworker [--json] <command> [options]\n"
    "\n"
    "commands:\n"
    "  migrate [--dry-run|--status]  apply pending database migrations (--dry-run: list what would\n"
    "                              apply; --status: every migration, applied or pending; neither changes anything)\n"
    "  tenant create --name NAME   create a tenant and print its id\n"
    "  export --tenant T [--format json|csv]\n"
    "                              the tenant's accounts, balances, journal and bank transactions\n"
    "  keys status|rotate|rewrap|destroy   tenant keys: see crypto/README.md\n"
    "  audit verify|checkpoint|pubkey      the signed audit chain: see crypto/README.md\n"
    "  run                         the service: job dispatcher, webhooks, /healthz /readyz /metrics\n"
    "  stripe secret add --tenant T --secret-file F | stripe secret remove --tenant T --id S\n"
    "  stripe connect --tenant T --account acct_…\n"
    "                              map a Connect account to the tenant; its unrouted events move in\n"
    "  stripe key set --tenant T --key-file F\n"
    "  plaid link --tenant T --public-token P [--wait]\n"
    "                              exchange a Plaid public token for a new bank connection\n"
    "  connections list --tenant T | connections sync|revoke --tenant T --connection C [--wait]\n"
    "  scope-key add --id K --key-file F | scope-key list | scope-key retire --id K\n"
    "                              the keys the app mints tenant scope tokens with (README)\n"
    "  jobs list [--state S] [--kind K] [--tenant T] [--limit N] | jobs retry ID | jobs cancel ID\n"
    "\n"
    "options:\n"
    "  --json       machine-readable output\n"
    "  --help       this text\n"
    "  --version    the version\n"
    "\n"
    "environment: BANKWORKER_DATABASE_URL (the runtime login), BANKWORKER_MIGRATE_DATABASE_URL (migrate),\n"
    "BANKWORKER_LOG_LEVEL, …\n"
    "see README.md for every variable.\n";

// Every command, by its first word. Add a line here for a new command group.
struct command {
  std::string_view name;
  command_function run;
};
constexpr command commands[] = {
    {"migrate", command_migrate},
    {"tenant", command_tenant},
    {"export", command_export},
    {"keys", command_keys},
    {"audit", command_audit},
    {"jobs", command_jobs},
    {"run", command_run},
    {"stripe", command_stripe},
    {"plaid", command_plaid},
    {"connections", command_connections},
    {"scope-key", command_scope_key},
};

}  // namespace

int run_cli(std::span<const std::string_view> args, const env_lookup& env, std::ostream& out, std::ostream& err) {
  try {
    const parsed_args parsed = parse_args(args);
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
    for (const auto& [name, run] : commands) {
      if (name == command) return run(parsed, env, out);
    }
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
  } catch (const pqxx::broken_connection& error) {
    err << "bankworker: cannot connect to the database: " << one_line(error.what()) << '\n';
    return exit_failed;
  } catch (const pqxx::sql_error& error) {
    err << "bankworker: database error: " << one_line(error.what()) << '\n';
    return exit_failed;
  }
}

}  // namespace bankworker::worker
