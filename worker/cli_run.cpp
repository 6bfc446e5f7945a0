// `bankworker run` (worker/runtime.hpp), `bankworker stripe secret add|remove` and
// `bankworker stripe key set`.
#include <array>

#include "crypto/secret.hpp"
#include "db/stripe_store.hpp"
#include "db/tenant_scope.hpp"
#include "connectors/stripe/signature.hpp"
#include "worker/cli.hpp"
#include "worker/cli_support.hpp"
#include "worker/runtime.hpp"

namespace bankworker::worker {

int command_run(const parsed_args& parsed, const env_lookup& env, std::ostream&) {
  expect_only(parsed, 1, {});
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  return run_service(config);
}

namespace {

// A Stripe secret or restricted API key (sk_live_…, sk_test_…, rk_live_…, rk_test_…): checked so
// that a webhook secret or a typo is not sealed as a key. The text is never printed.
bool looks_like_api_key(std::string_view text) {
  constexpr std::array<std::string_view, 4> prefixes = {"sk_live_", "sk_test_", "rk_live_", "rk_test_"};
  bool prefixed = false;
  for (const std::string_view prefix : prefixes) prefixed = prefixed || text.starts_with(prefix);
  if (!prefixed || text.size() > 255) return false;
  for (const char c : text) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!allowed) return false;
  }
  return true;
}

// `stripe key set --tenant T --key-file F`: seals the tenant's API key (replacing the previous).
int command_stripe_key(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {"--tenant", "--key-file"});
  const core::uuid tenant = tenant_option(parsed);
  const auto file = parsed.option("--key-file");
  if (!file) throw usage_error{"stripe key set needs --key-file F"};
  std::optional<crypto::secret> key;
  try {
    key = crypto::read_secret_file(std::string(*file), crypto::file_permissions::owner_or_group_only);
  } catch (const crypto::secret_file_error& error) {
    throw usage_error{error.what()};
  }
  if (!looks_like_api_key(key->reveal().text())) {
    throw usage_error{"the key file does not hold a Stripe API key (sk_… or rk_…)"};
  }
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  try {
    const core::uuid id = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      if (!db::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      return db::set_api_key(tx, *keys, tenant, *key, "cli");
    });
    out << (parsed.json ? "{\"secret_id\":\"" + id.to_string() + "\"}" : id.to_string()) << '\n';
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe key", error);
  }
  return exit_ok;
}

}  // namespace

int command_stripe(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  if (parsed.words.size() >= 3 && parsed.words[1] == "key" && parsed.words[2] == "set") {
    return command_stripe_key(parsed, env, out);
  }
  if (parsed.words.size() < 3 || parsed.words[1] != "secret" ||
      (parsed.words[2] != "add" && parsed.words[2] != "remove")) {
    throw usage_error{"expected 'stripe secret add --tenant T --secret-file F', 'stripe secret remove --tenant T --id S'"
                      " or 'stripe key set --tenant T --key-file F'"};
  }
  const bool adding = parsed.words[2] == "add";
  expect_only(parsed, 3, {"--tenant", adding ? "--secret-file" : "--id"});
  const core::uuid tenant = tenant_option(parsed);
  std::optional<crypto::secret> secret;
  std::optional<core::uuid> secret_id;
  if (adding) {
    const auto file = parsed.option("--secret-file");
    if (!file) throw usage_error{"stripe secret add needs --secret-file F"};
    try {
      secret = crypto::read_secret_file(std::string(*file), crypto::file_permissions::owner_or_group_only);
    } catch (const crypto::secret_file_error& error) {
      throw usage_error{error.what()};
    }
    const crypto::secret::view text = secret->reveal();
    if (!stripe::looks_like_webhook_secret(text.text())) {
      throw usage_error{"the secret file does not hold a Stripe webhook signing secret (whsec_…)"};
    }
  } else {
    const auto id = parsed.option("--id");
    secret_id = id ? core::uuid::parse(*id) : std::nullopt;
    if (!secret_id) throw usage_error{"stripe secret remove needs --id SECRET_ID (a uuid)"};
  }

  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  try {
    if (adding) {
      const core::uuid id = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        if (!db::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
        return db::add_webhook_secret(tx, *keys, tenant, *secret, "cli");
      });
      out << (parsed.json ? "{\"secret_id\":\"" + id.to_string() + "\"}" : id.to_string()) << '\n';
    } else {
      const bool removed = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        return db::remove_webhook_secret(tx, *keys, tenant, *secret_id, "cli");
      });
      if (!removed) throw command_error{"no webhook secret " + secret_id->to_string() + " for tenant " + tenant.to_string()};
      out << "removed " << secret_id->to_string() << '\n';
    }
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe secret", error);
  }
  return exit_ok;
}

}  // namespace bankworker::worker
