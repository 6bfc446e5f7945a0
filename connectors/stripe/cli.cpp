// `bankworker stripe secret add|remove|list`, `bankworker stripe connect`, `bankworker stripe key set`:
// the Stripe commands of the CLI.
#include <algorithm>
#include <array>

#include "connectors/stripe/cli.hpp"
#include "connectors/stripe/signature.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "crypto/secret.hpp"
#include "db/audit.hpp"
#include "db/tenant_scope.hpp"
#include "service/command.hpp"

namespace bankworker::stripe {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::open_queue_pool;
using service::open_key_store;
using service::tenant_option;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;
using service::exit_ok;

namespace {

// Stripe account ids as bankworker.stripe_accounts accepts them: acct_ and 1–64 letters or digits.
bool looks_like_account_id(std::string_view text) {
  constexpr std::string_view prefix = "acct_";
  if (!text.starts_with(prefix) || text.size() == prefix.size() || text.size() > prefix.size() + 64) return false;
  return std::all_of(text.begin() + prefix.size(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

struct connect_result {
  stripe::account_claim claim = stripe::account_claim::connected;
  std::size_t moved = 0;
  bool more_left = false;  // stripe_connect_move_events_max moved and some may remain: run again
};

// `stripe connect --tenant T --account acct_…`: in one transaction, maps the account to the tenant
// (refusing an account another tenant holds), moves the account's unrouted events into the
// tenant's inbox (the running worker's posters take them from there), and audits what
// changed. Re-running for the same tenant changes nothing unless unrouted events are waiting.
int connect_account(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant", "--account"});
  const core::uuid tenant = tenant_option(parsed);
  const auto account_option = parsed.option("--account");
  if (!account_option || !looks_like_account_id(*account_option)) {
    throw usage_error{"stripe connect needs --account acct_… (acct_ and 1-64 letters or digits)"};
  }
  const std::string account(*account_option);

  settings config = load_or_throw(env, {.database = true, .root_key = true});
  const auto connections = open_queue_pool(config);
  const auto keys = open_key_store(config, *connections);
  connect_result result;
  try {
    result = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      connect_result r;
      r.claim = stripe::claim_stripe_account(tx, account);
      if (r.claim == stripe::account_claim::other_tenant) {
        throw command_error{"Stripe account " + account + " is already connected to another tenant; an account"
                            " maps to one tenant only"};
      }
      for (;;) {
        // Moved in as received: the posters take them from the inbox like any new event.
        const std::vector<std::string> ids =
            stripe::move_unrouted_events(tx, account, limits::stripe_connect_move_batch_events);
        r.moved += ids.size();
        if (ids.size() < limits::stripe_connect_move_batch_events) break;
        if (r.moved >= limits::stripe_connect_move_events_max) {
          r.more_left = true;
          break;
        }
      }
      if (r.claim == stripe::account_claim::connected || r.moved > 0) {
        std::string details = "{\"events_moved\":" + std::to_string(r.moved) + "}";
        db::append_audit(tx, *keys, {.tenant = tenant, .actor = "cli", .action = "stripe.account_connected",
                                     .subject = account, .details = std::move(details)});
      }
      return r;
    });
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe connect", error);
  }
  const bool already = result.claim == stripe::account_claim::already_connected;
  if (parsed.json) {
    std::string text = "{\"account\":";
    core::append_json_string(account, text);
    text += ",\"tenant\":";
    core::append_json_string(tenant.to_string(), text);
    text += std::string(",\"already_connected\":") + (already ? "true" : "false") +
            ",\"events_moved\":" + std::to_string(result.moved) +
            ",\"more_left\":" + (result.more_left ? "true" : "false") + "}";
    out << text << '\n';
  } else {
    out << (already ? "already connected " : "connected ") << account << " to tenant " << tenant.to_string() << "; "
        << result.moved << " unrouted event(s) moved into its inbox";
    if (result.more_left) out << " (more may remain: run the command again)";
    out << '\n';
  }
  return exit_ok;
}

}  // namespace


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
      if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      return stripe::set_api_key(tx, *keys, tenant, *key, "cli");
    });
    out << (parsed.json ? "{\"secret_id\":\"" + id.to_string() + "\"}" : id.to_string()) << '\n';
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe key", error);
  }
  return exit_ok;
}

// `stripe secret list --tenant T`: ids, dates and key versions of the active signing secrets; the
// secrets themselves stay sealed (no root key is even loaded).
int list_stripe_secrets(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  expect_only(parsed, 3, {"--tenant"});
  const core::uuid tenant = tenant_option(parsed);
  settings config = load_or_throw(env, {.database = true});
  const auto connections = open_worker_pool(config);
  std::vector<stripe::webhook_secret_info> secrets;
  try {
    secrets = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
      return stripe::list_webhook_secrets(tx);
    });
  } catch (const pqxx::sql_error& error) {
    throw_database_failure("stripe secret list", error);
  }
  std::string text = "{\"tenant_id\":\"" + tenant.to_string() + "\",\"secrets\":[";
  for (const stripe::webhook_secret_info& secret : secrets) {
    if (!parsed.json) {
      out << secret.id.to_string() << " created_at=" << secret.created_at
          << " rewrapped_at=" << secret.rewrapped_at.value_or("-") << " key_version=" << secret.key_version << '\n';
      continue;
    }
    if (text.back() != '[') text.push_back(',');
    text += "{\"secret_id\":\"" + secret.id.to_string() + "\",\"created_at\":";
    core::append_json_string(secret.created_at, text);
    text += ",\"rewrapped_at\":";
    if (secret.rewrapped_at) core::append_json_string(*secret.rewrapped_at, text);
    else text += "null";
    text += ",\"key_version\":" + std::to_string(secret.key_version) + "}";
  }
  if (parsed.json) out << text << "]}\n";
  return exit_ok;
}

}  // namespace

int command_stripe(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  if (parsed.words.size() >= 2 && parsed.words[1] == "connect") return connect_account(parsed, env, out);
  if (parsed.words.size() >= 2 && parsed.words[1] == "events") return command_stripe_events(parsed, env, out);
  if (parsed.words.size() >= 3 && parsed.words[1] == "secret" && parsed.words[2] == "list") {
    return list_stripe_secrets(parsed, env, out);
  }
  if (parsed.words.size() >= 3 && parsed.words[1] == "key" && parsed.words[2] == "set") {
    return command_stripe_key(parsed, env, out);
  }
  if (parsed.words.size() < 3 || parsed.words[1] != "secret" ||
      (parsed.words[2] != "add" && parsed.words[2] != "remove")) {
    throw usage_error{"expected 'stripe secret add --tenant T --secret-file F', 'stripe secret remove --tenant T --id S',"
                      " 'stripe secret list --tenant T',"
                      " 'stripe key set --tenant T --key-file F' or 'stripe connect --tenant T --account acct_…'"};
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
        if (!stripe::tenant_exists(tx)) throw command_error{"unknown tenant " + tenant.to_string()};
        return stripe::add_webhook_secret(tx, *keys, tenant, *secret, "cli");
      });
      out << (parsed.json ? "{\"secret_id\":\"" + id.to_string() + "\"}" : id.to_string()) << '\n';
    } else {
      const bool removed = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        return stripe::remove_webhook_secret(tx, *keys, tenant, *secret_id, "cli");
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

}  // namespace bankworker::stripe
