#pragma once
// What every `bankworker` command shares: argument parsing, the three kinds of failure, and
// access to configuration and the database. Each group of commands lives in its own cli_*.cpp
// and is listed once in cli.cpp's command table.

#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "db/keys.hpp"
#include "db/pool.hpp"
#include "service/config.hpp"

namespace bankworker::service {

// Bad usage (exit 2); carries the one-line reason.
struct usage_error {
  std::string reason;
};

// The command failed (exit 1): database unreachable, migration refused, …
struct command_error {
  std::string reason;
};

// Configuration problems (exit 78), one line each.
struct config_error {
  std::vector<std::string> problems;
};

// Collapses a multi-line message (libpq's are) into one line.
std::string one_line(std::string_view text);

struct parsed_args {
  bool json = false;
  std::vector<std::string_view> words;                                 // positional words
  std::vector<std::pair<std::string_view, std::string_view>> options;  // --option VALUE
  std::vector<std::string_view> flags;                                 // --switch

  std::optional<std::string_view> option(std::string_view name) const;
  bool flag(std::string_view name) const;
};

// Options that take a value (every contract option of DESIGN.md §6); any other --word is a switch
// that a command must accept explicitly through expect_only.
inline constexpr std::string_view value_options[] = {
    "--name",    "--tenant", "--connection", "--secret-file", "--id",    "--account", "--key-file",
    "--public-token", "--format", "--state",   "--kind",        "--limit", "--root-key-file", "--batch-rows",
    "--database-url", "--status", "--plaid-account", "--ledger-account", "--tolerance-minor",
    "--exponent", "--password-file"};

parsed_args parse_args(std::span<const std::string_view> args);

// Refuses more than `words` positional words and any option or switch not listed.
void expect_only(const parsed_args& parsed, std::size_t words, std::initializer_list<std::string_view> options);

// Loads configuration or throws config_error with every problem.
settings load_or_throw(const env_lookup& env, settings_needs needs);

// Who a direct connection is for: `migrate` connects as the schema owner's login; everything else
// as the runtime login, which is refused (config_error, exit 78) when it holds owner power.
enum class login_use { migration, runtime };

// A direct connection as the login role (migrations, operator commands that are not tenant work).
std::unique_ptr<pqxx::connection> connect_as_login_user(const settings& config, login_use use = login_use::runtime);

// A small pool as bankworker_worker for tenant-scoped work from the CLI.
std::unique_ptr<db::pool> open_worker_pool(settings& config, std::size_t connections = 1);

// The same, one connection, with the queue's prepared statements (commands that enqueue or
// manage jobs).
std::unique_ptr<db::pool> open_queue_pool(settings& config);

// The configured root keys, primary first: Vault Transit if BANKWORKER_VAULT_ADDR is set, the root
// key file, then the previous root key file. Throws command_error when one is unusable.
std::vector<std::unique_ptr<crypto::root_key_provider>> configured_root_keys(const settings& config);

// The key store over `new_primary` (if given) and the configured root keys, with the audit
// signing key loaded. Throws command_error when a root key is unusable.
std::unique_ptr<db::key_store> open_key_store(const settings& config, db::pool& connections,
                                              std::unique_ptr<crypto::root_key_provider> new_primary = nullptr);

// Parses --tenant or throws usage_error.
core::uuid tenant_option(const parsed_args& parsed);

// Rethrows a database failure as a command_error with a one-line reason that says what to do.
[[noreturn]] void throw_database_failure(std::string_view doing, const pqxx::sql_error& error);

// One command's entry in the help table (worker/cli_help.hpp): `--help`, the man page and the
// bash completion are printed from these.
struct command_help {
  std::string_view path;      // "jobs list"; a group ("jobs") lists the entries below it
  std::string_view synopsis;  // what follows the path: "[--state S] [--kind K]"
  std::string_view summary;   // one sentence
  std::string_view details;   // option lines ("  --state S   …\n"), may be empty
  bool database = true;       // connects to the database, so --database-url applies
};

// A command's exit status (DESIGN.md §6).
inline constexpr int exit_ok = 0;
inline constexpr int exit_failed = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_config = 78;  // EX_CONFIG from sysexits.h

using command_function = int (*)(const parsed_args& parsed, const env_lookup& env, std::ostream& out);

}  // namespace bankworker::service
