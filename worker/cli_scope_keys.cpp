// Scope keys (issue 23): `scope-key add --id K --key-file F`, `scope-key list`,
// `scope-key retire --id K`. The key file's content is never printed; add prints only the key's
// fingerprint, which an operator compares with the app's configuration. Every change is audited
// in every tenant's chain (db/scope_keys.hpp).
#include <string>

#include "core/json_text.hpp"
#include "db/scope_keys.hpp"
#include "worker/cli.hpp"
#include "service/command.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::open_key_store;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

constexpr std::string_view actor = "cli";

std::string key_id_option(const parsed_args& parsed) {
  const std::optional<std::string_view> id = parsed.option("--id");
  if (!id) throw usage_error{"--id KEY_ID is required"};
  return std::string(*id);
}

int scope_key_add(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--id", "--key-file"});
  const std::string key_id = key_id_option(parsed);
  const std::optional<std::string_view> file = parsed.option("--key-file");
  if (!file) throw usage_error{"--key-file FILE is required (64 hex digits; never on the command line)"};
  crypto::secret key;
  try {
    std::string why;
    key = db::parse_scope_key(crypto::read_secret_file(std::string(*file)), why);
    if (key.empty()) throw usage_error{"--key-file " + std::string(*file) + ": " + why};
  } catch (const crypto::secret_file_error& error) {
    throw usage_error{"--key-file: " + std::string(error.what())};
  }
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  std::string fingerprint;
  try {
    fingerprint = db::add_scope_key(*connections, *keys, key_id, key, actor);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("scope-key add", error);
  }
  if (parsed.json) {
    std::string json = "{\"key_id\":";
    core::append_json_string(key_id, json);
    json += ",\"fingerprint\":";
    core::append_json_string(fingerprint, json);
    out << json << "}\n";
  } else {
    out << "scope key " << key_id << " added (fingerprint " << fingerprint << ")\n";
  }
  return exit_ok;
}

int scope_key_list(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {});
  const auto connections = open_worker_pool(config);
  std::vector<db::scope_key_info> listed;
  try {
    listed = db::list_scope_keys(*connections);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("scope-key list", error);
  }
  std::string json = "[";
  for (const db::scope_key_info& key : listed) {
    const std::string state = key.retired_at ? "retired" : "active";
    if (!parsed.json) {
      out << key.key_id << '\t' << state << '\t' << key.fingerprint << '\t' << key.created_at
          << (key.retired_at ? "\tretired " + *key.retired_at : std::string()) << '\n';
      continue;
    }
    if (json.size() > 1) json.push_back(',');
    json += "{\"key_id\":";
    core::append_json_string(key.key_id, json);
    json += ",\"state\":";
    core::append_json_string(state, json);
    json += ",\"fingerprint\":";
    core::append_json_string(key.fingerprint, json);
    json += ",\"created_at\":";
    core::append_json_string(key.created_at, json);
    json += "}";
  }
  if (parsed.json) out << json << "]\n";
  return exit_ok;
}

int scope_key_retire(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--id"});
  const std::string key_id = key_id_option(parsed);
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  bool retired = false;
  try {
    retired = db::retire_scope_key(*connections, *keys, key_id, actor);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("scope-key retire", error);
  }
  if (!retired) throw command_error{"no active scope key has the id " + key_id};
  out << (parsed.json ? "{\"retired\":true}\n" : "scope key " + key_id + " retired: tokens under it are refused\n");
  return exit_ok;
}

}  // namespace

int command_scope_key(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view verb = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view();
  if (verb != "add" && verb != "list" && verb != "retire") {
    throw usage_error{"expected 'scope-key add --id K --key-file F', 'scope-key list' or 'scope-key retire --id K'"};
  }
  settings config = load_or_throw(env, {.database = true, .root_key = verb != "list"});
  if (verb == "add") return scope_key_add(parsed, config, out);
  if (verb == "list") return scope_key_list(parsed, config, out);
  return scope_key_retire(parsed, config, out);
}

}  // namespace bankworker::worker
