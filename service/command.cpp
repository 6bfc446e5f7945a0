#include "service/command.hpp"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/limits.hpp"
#include "connectors/vault/transit_root_key.hpp"
#include "core/assert.hpp"
#include "db/connect.hpp"
#include "db/connection_problem.hpp"
#include "db/login.hpp"
#include "queue/queue.hpp"

namespace bankworker::service {

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

std::optional<std::string_view> parsed_args::option(std::string_view name) const {
  for (const auto& [key, value] : options) {
    if (key == name) return value;
  }
  return std::nullopt;
}

bool parsed_args::flag(std::string_view name) const {
  return std::find(flags.begin(), flags.end(), name) != flags.end();
}

namespace {

bool takes_value(std::string_view option) {
  return std::find(std::begin(value_options), std::end(value_options), option) != std::end(value_options);
}

}  // namespace

parsed_args parse_args(std::span<const std::string_view> args) {
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
    } else if (takes_value(arg) && !(arg == "--status" && !parsed.words.empty() && parsed.words.front() == "migrate")) {
      // `--status` takes a value everywhere (connections list --status S) but is a switch of
      // `migrate` (migrate --status), whose word comes first.
      if (i + 1 >= args.size()) throw usage_error{"option " + std::string(arg) + " needs a value"};
      if (parsed.option(arg)) throw usage_error{"option " + std::string(arg) + " given twice"};
      parsed.options.emplace_back(arg, args[++i]);
    } else if (arg == "--help" || arg == "-h" || arg == "--version") {
      parsed.words.push_back(arg);
    } else if (arg.starts_with("--") && arg.size() > 2) {
      if (parsed.flag(arg)) throw usage_error{"option " + std::string(arg) + " given twice"};
      parsed.flags.push_back(arg);
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
  const auto allowed = [&](std::string_view name) {
    return std::find(options.begin(), options.end(), name) != options.end();
  };
  for (const auto& [name, value] : parsed.options) {
    if (!allowed(name)) throw usage_error{"option " + std::string(name) + " does not apply here"};
  }
  for (const std::string_view name : parsed.flags) {
    if (!allowed(name)) throw usage_error{"unknown option " + std::string(name)};
  }
}

settings load_or_throw(const env_lookup& env, settings_needs needs) {
  settings_result loaded = load_settings(env, needs);
  if (!loaded.problems.empty()) throw config_error{std::move(loaded.problems)};
  return std::move(loaded.value);
}

namespace {

// Refuses a runtime login with owner power (db/login.hpp), one line naming the reason.
void refuse_privileged_login(pqxx::connection& connection) {
  std::optional<std::string> problem;
  try {
    problem = db::runtime_login_problem(connection);
  } catch (const pqxx::sql_error& error) {
    throw command_error{"checking the login's privileges failed: " + one_line(error.what())};
  }
  if (problem) throw config_error{{"BANKWORKER_DATABASE_URL: " + *problem}};
}

// libpq says only "timeout expired" when connect_timeout fires; name the setting that fired.
std::string connect_timeout_note(const settings& config, const pqxx::broken_connection& error) {
  if (std::string_view(error.what()).find("timeout expired") == std::string_view::npos) return {};
  return " (BANKWORKER_DATABASE_CONNECT_TIMEOUT, " + std::to_string(config.database_connect_timeout.count()) + " s)";
}

}  // namespace

namespace {

// One attempt; nothing (and the reason in `no_primary`) when every server the URL names answered
// but none takes writes.
std::unique_ptr<pqxx::connection> connect_once(const settings& config, login_use use, std::string& no_primary) {
  std::string url(config.database_url.reveal().text());
  db::add_connect_timeout(url, config.database_connect_timeout);
  try {
    auto connection = std::make_unique<pqxx::connection>(url);
    sodium_memzero(url.data(), url.size());
    // Operator commands get deadlines too, longer than the runtime's: a migration may rewrite a
    // large table, but must not wait forever behind another session's lock or idle in a transaction.
    db::configure_operator_session(*connection, limits::operator_statement_timeout, limits::operator_lock_timeout,
                                   limits::operator_idle_in_transaction_timeout);
    db::require_primary(*connection);
    if (use == login_use::runtime) refuse_privileged_login(*connection);
    return connection;
  } catch (const pqxx::broken_connection& error) {
    sodium_memzero(url.data(), url.size());
    if (db::is_no_primary(error)) {
      no_primary = one_line(error.what());
      return nullptr;
    }
    throw command_error{"cannot connect to the database: " + one_line(error.what()) + connect_timeout_note(config, error)};
  }
}

}  // namespace

std::unique_ptr<pqxx::connection> connect_as_login_user(const settings& config, login_use use) {
  // In a failover every server may refuse writes for a few seconds (the old primary draining, the
  // standby not yet promoted); for longer than startup_primary_wait the URL names no primary, which
  // is the configuration (exit 78, and systemd does not restart into the same refusal).
  const auto deadline = std::chrono::steady_clock::now() + limits::startup_primary_wait;
  for (;;) {
    std::string no_primary;
    if (auto connection = connect_once(config, use, no_primary)) return connection;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw config_error{{"BANKWORKER_DATABASE_URL names no primary (every server it names refuses writes for " +
                          std::to_string(limits::startup_primary_wait.count()) +
                          " s: standbys only?): " + no_primary +
                          "; name the primary, or every node with target_session_attrs=read-write"}};
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

std::unique_ptr<db::pool> open_worker_pool(settings& config, std::size_t connections) {
  db::pool_settings pool_config;
  pool_config.connections = connections;
  pool_config.connect_timeout = config.database_connect_timeout;
  connect_as_login_user(config, login_use::runtime);  // refuses a login with owner power first
  return std::make_unique<db::pool>(std::move(config.database_url), std::move(pool_config));
}

std::unique_ptr<db::pool> open_queue_pool(settings& config) { return open_worker_pool(config, 1); }

namespace {

// A root key file that cannot be used (unreadable, too open, not 32 bytes of hex) is the operator's
// configuration, not a failure of the command: exit 78, naming the variable, and systemd does not
// restart a worker that would fail the same way (RestartPreventExitStatus=78).
std::unique_ptr<crypto::root_key_provider> load_root_key_file(std::string_view variable,
                                                              const std::filesystem::path& path) {
  try {
    return crypto::file_root_key::load(path);
  } catch (const crypto::root_key_error& error) {
    throw config_error{{std::string(variable) + ": " + one_line(error.what())}};
  }
}

}  // namespace

std::vector<std::unique_ptr<crypto::root_key_provider>> configured_root_keys(const settings& config) {
  std::vector<std::unique_ptr<crypto::root_key_provider>> providers;
  try {
    if (!config.vault_address.empty()) {
      crypto::secret token;
      {
        const crypto::secret::view text = config.vault_token.reveal();
        token = crypto::secret::copy_of(text.text());
      }
      providers.push_back(std::make_unique<connectors::vault::transit_root_key>(
          connectors::vault::transit_settings{.address = config.vault_address,
                                              .mount = config.vault_transit_mount,
                                              .key_name = config.vault_transit_key},
          std::move(token)));
    }
    if (config.root_key_file) providers.push_back(load_root_key_file("BANKWORKER_ROOT_KEY_FILE", *config.root_key_file));
    if (config.root_key_previous_file) {
      providers.push_back(load_root_key_file("BANKWORKER_ROOT_KEY_PREVIOUS_FILE", *config.root_key_previous_file));
    }
  } catch (const crypto::root_key_error& error) {
    throw command_error{one_line(error.what())};
  } catch (const std::invalid_argument& error) {
    throw command_error{std::string("vault: ") + error.what()};
  }
  if (providers.empty()) throw command_error{"no root key configured (BANKWORKER_ROOT_KEY_FILE or BANKWORKER_VAULT_ADDR)"};
  return providers;
}

std::unique_ptr<db::key_store> open_key_store(const settings& config, db::pool& connections,
                                              std::unique_ptr<crypto::root_key_provider> new_primary) {
  auto providers = configured_root_keys(config);
  try {
    crypto::root_key_ring ring;
    if (new_primary) ring = crypto::root_key_ring(std::move(new_primary));
    for (auto& provider : providers) {
      if (ring.empty()) ring = crypto::root_key_ring(std::move(provider));
      else ring.add_previous(std::move(provider));
    }
    auto keys = std::make_unique<db::key_store>(std::move(ring));
    keys->prepare(connections);
    return keys;
  } catch (const crypto::root_key_error& error) {
    throw command_error{one_line(error.what())};
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("loading the audit signing key", error);
  }
}

core::uuid tenant_option(const parsed_args& parsed) {
  const std::optional<std::string_view> text = parsed.option("--tenant");
  if (!text) throw usage_error{"--tenant TENANT_ID is required"};
  const std::optional<core::uuid> tenant = core::uuid::parse(*text);
  if (!tenant) throw usage_error{"--tenant: '" + std::string(*text) + "' is not a uuid"};
  return *tenant;
}

void throw_database_failure(std::string_view doing, const pqxx::sql_error& error) {
  // 42P01 undefined table, 3F000 no such schema, 22023 SET ROLE to a role that does not exist.
  const std::string state = error.sqlstate();
  if (state == "42P01" || state == "3F000" || state == "22023") {
    throw command_error{"the database is not migrated (" + one_line(error.what()) +
                        "); run 'bankworker migrate' first"};
  }
  throw command_error{std::string(doing) + " failed: " + one_line(error.what())};
}

}  // namespace bankworker::service
