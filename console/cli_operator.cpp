// `bankworker operator add|remove|list`: the console's operator accounts (console/auth.hpp).
// `add` hashes the password (argon2id, interactive cost) before anything reaches the database;
// without --password-file it makes a random password and prints it once.
#include "console/cli_operator.hpp"

#include "console/auth.hpp"
#include "core/json_text.hpp"
#include "crypto/secret.hpp"

namespace bankworker::console {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;
using service::exit_ok;

namespace {

constexpr std::size_t generated_password_bytes = 16;  // 32 hex characters

std::string operator_name_word(const parsed_args& parsed, std::string_view verb) {
  if (parsed.words.size() < 3) throw usage_error{"expected 'operator " + std::string(verb) + " NAME'"};
  const std::string name(parsed.words[2]);
  if (const auto why = check_operator_name(name)) throw usage_error{*why};
  return name;
}

int add(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {"--password-file"});
  const std::string name = operator_name_word(parsed, "add");
  const auto file = parsed.option("--password-file");
  std::string generated;
  crypto::secret password = crypto::secret::copy_of("");
  if (file) {
    try {
      password = crypto::read_secret_file(std::string(*file));
    } catch (const crypto::secret_file_error& error) {
      throw command_error{one_line(error.what())};
    }
  } else {
    generated = random_token_hex(generated_password_bytes);
    password = crypto::secret::copy_of(generated);
  }
  if (const auto why = check_password(password)) throw usage_error{*why};
  const std::string hash = hash_password(password, interactive_password_cost());
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  try {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    add_operator(tx, name, hash);
    tx.commit();
  } catch (const operator_exists& error) {
    throw command_error{error.what()};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("operator add", error);
  }
  if (parsed.json) {
    std::string text = "{\"name\":";
    core::append_json_string(name, text);
    if (!generated.empty()) {
      text += ",\"password\":";
      core::append_json_string(generated, text);
    }
    out << text << "}\n";
  } else {
    out << "operator " << name << " added\n";
    if (!generated.empty()) out << "password (shown once): " << generated << '\n';
  }
  return exit_ok;
}

int remove(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {});
  const std::string name = operator_name_word(parsed, "remove");
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  bool removed = false;
  try {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    removed = remove_operator(tx, name);
    tx.commit();
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("operator remove", error);
  }
  if (!removed) throw command_error{"no operator " + name};
  out << "operator " << name << " removed (and signed out)\n";
  return exit_ok;
}

int list(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {});
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  std::vector<operator_account> accounts;
  try {
    auto lease = connections->checkout();
    pqxx::read_transaction tx(lease.connection());
    accounts = list_operators(tx);
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("operator list", error);
  }
  std::string text = "{\"operators\":[";
  for (const operator_account& account : accounts) {
    if (!parsed.json) {
      out << account.name << " created_at=" << account.created_at << '\n';
      continue;
    }
    if (text.back() != '[') text.push_back(',');
    text += "{\"name\":";
    core::append_json_string(account.name, text);
    text += ",\"created_at\":";
    core::append_json_string(account.created_at, text);
    text += "}";
  }
  if (parsed.json) out << text << "]}\n";
  return exit_ok;
}

}  // namespace

int command_operator(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view sub = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view{};
  if (sub == "add") return add(parsed, env, out);
  if (sub == "remove") return remove(parsed, env, out);
  if (sub == "list") return list(parsed, env, out);
  throw usage_error{"expected 'operator add|remove|list' (see bankworker operator --help)"};
}

}  // namespace bankworker::console
