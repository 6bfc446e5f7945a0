#include "worker/cli.hpp"

#include <string>

#include "console/cli_operator.hpp"
#include "worker/cli_help.hpp"
#include "service/command.hpp"
#include "service/provider.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::config_error;
using service::one_line;
using service::parsed_args;
using service::parse_args;
using service::expect_only;
using service::command_function;
using service::env_lookup;

namespace {

// Every command, by its first word. Add a line here for a new command group.
struct command {
  std::string_view name;
  command_function run;
};
constexpr command commands[] = {
    {"migrate", command_migrate},
    {"tenant", command_tenant},
    {"export", command_export},
    {"reconcile", command_reconcile},
    {"keys", command_keys},
    {"audit", command_audit},
    {"jobs", command_jobs},
    {"run", command_run},
    {"scope-key", command_scope_key},
    {"currencies", command_currencies},
    {"operator", console::command_operator},
};

bool asks_for_help(std::string_view word) { return word == "--help" || word == "-h"; }

// `--help` anywhere, `help [COMMAND...]`, `man` and `completion bash`: all from the help table.
std::optional<int> answer_help(const parsed_args& parsed, std::ostream& out) {
  std::vector<std::string_view> words;
  bool help = false;
  for (const std::string_view word : parsed.words) {
    if (asks_for_help(word)) help = true;
    else words.push_back(word);
  }
  if (!words.empty() && words.front() == "help") {
    help = true;
    words.erase(words.begin());
  }
  if (help) {
    if (words.empty()) {
      print_usage(out);
      return exit_ok;
    }
    const command_help* found = find_command_help(words);
    if (found == nullptr) throw usage_error{"unknown command '" + std::string(words.front()) + "' (see bankworker --help)"};
    print_command_help(*found, out);
    return exit_ok;
  }
  if (words.front() == "man") {
    expect_only(parsed, 1, {});
    print_man_page(out);
    return exit_ok;
  }
  if (words.front() == "completion") {
    expect_only(parsed, 2, {});
    if (words.size() != 2 || words[1] != "bash") throw usage_error{"expected 'completion bash'"};
    print_bash_completion(out);
    return exit_ok;
  }
  return std::nullopt;
}

// --database-url URL stands in for BANKWORKER_DATABASE_URL and BANKWORKER_MIGRATE_DATABASE_URL
// (and hides their _FILE forms, so that the two do not conflict); the option is then consumed.
env_lookup with_database_url(parsed_args& parsed, const env_lookup& env) {
  const std::optional<std::string_view> url = parsed.option("--database-url");
  if (!url) return env;
  const command_help* found = find_command_help(parsed.words);
  if (found != nullptr && !found->database) {
    throw usage_error{"--database-url does not apply to '" + std::string(found->path) + "'"};
  }
  std::erase_if(parsed.options, [](const auto& option) { return option.first == "--database-url"; });
  return [env, url = std::string(*url)](std::string_view name) -> std::optional<std::string> {
    if (name == "BANKWORKER_DATABASE_URL" || name == "BANKWORKER_MIGRATE_DATABASE_URL") return url;
    if (name == "BANKWORKER_DATABASE_URL_FILE" || name == "BANKWORKER_MIGRATE_DATABASE_URL_FILE") return std::nullopt;
    return env(name);
  };
}

}  // namespace

int run_cli(std::span<const std::string_view> args, const env_lookup& env, std::ostream& out, std::ostream& err) {
  try {
    parsed_args parsed = parse_args(args);
    if (parsed.words.empty()) throw usage_error{"no command given (see bankworker --help)"};
    if (const std::optional<int> answered = answer_help(parsed, out)) return *answered;
    const std::string_view command = parsed.words.front();
    if (command == "--version") {
      out << "bankworker " << BANKWORKER_VERSION << '\n';
      return exit_ok;
    }
    const env_lookup effective_env = with_database_url(parsed, env);
    for (const auto& [name, run] : commands) {
      if (name == command) return run(parsed, effective_env, out);
    }
    for (const auto& provider : service::all_providers()) {
      for (const service::command_group& group : provider->commands()) {
        if (group.name == command) return group.run(parsed, effective_env, out);
      }
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
