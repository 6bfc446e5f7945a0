// Audit commands: `audit verify [--tenant T]`, `audit checkpoint [--tenant T]`, `audit pubkey`.
#include <ctime>
#include <string>

#include "core/json_text.hpp"
#include "db/audit.hpp"
#include "db/keys.hpp"
#include "worker/cli.hpp"
#include "service/command.hpp"

namespace bankworker::worker {

using service::usage_error;
using service::command_error;
using service::one_line;
using service::parsed_args;
using service::expect_only;
using service::load_or_throw;
using service::open_worker_pool;
using service::open_key_store;
using service::tenant_option;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

std::string utc_now_text() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

template <class Work>
auto run_audit_operation(std::string_view doing, Work&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const crypto::root_key_error& error) {
    throw command_error{std::string(doing) + ": " + one_line(error.what())};
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure(doing, error);
  }
}

std::vector<db::audit_verification> verify_chosen(const parsed_args& parsed, db::pool& connections,
                                                  const db::key_store& keys) {
  std::vector<core::uuid> tenants;
  if (parsed.option("--tenant")) tenants.push_back(tenant_option(parsed));
  else tenants = db::list_tenants(connections);
  std::vector<db::audit_verification> results;
  for (const core::uuid& tenant : tenants) results.push_back(db::verify_audit_chain(connections, keys, tenant));
  return results;
}

[[noreturn]] void throw_broken(const db::audit_verification& result) {
  throw command_error{"audit chain of tenant " + result.tenant.to_string() + " is broken at row " +
                      std::to_string(result.broken->seq) + ": " + result.broken->reason};
}

int audit_verify(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant"});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  const auto results = run_audit_operation("audit verify", [&] { return verify_chosen(parsed, *connections, *keys); });
  const db::audit_verification* first_broken = nullptr;
  std::string json = "{\"tenants\":[";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& result = results[i];
    if (result.broken && first_broken == nullptr) first_broken = &result;
    if (parsed.json) {
      if (i > 0) json.push_back(',');
      json += "{\"tenant_id\":";
      core::append_json_string(result.tenant.to_string(), json);
      json += ",\"rows\":" + std::to_string(result.rows) + ",\"ok\":" + (result.broken ? "false" : "true");
      if (result.broken) {
        json += ",\"broken_seq\":" + std::to_string(result.broken->seq) + ",\"reason\":";
        core::append_json_string(result.broken->reason, json);
      }
      json += "}";
    } else if (result.broken) {
      out << "tenant " << result.tenant.to_string() << ": BROKEN at row " << result.broken->seq << ": "
          << result.broken->reason << '\n';
    } else {
      out << "tenant " << result.tenant.to_string() << ": " << result.rows << " rows verified, head "
          << crypto::to_hex(result.head) << '\n';
    }
  }
  if (parsed.json) out << json << "]}\n";
  if (first_broken != nullptr) throw_broken(*first_broken);
  return exit_ok;
}

int audit_checkpoint(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant"});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  const auto results =
      run_audit_operation("audit checkpoint", [&] { return verify_chosen(parsed, *connections, *keys); });
  // Only a chain that verifies gets a signed checkpoint.
  for (const auto& result : results) {
    if (result.broken) throw_broken(result);
  }
  const std::string now = utc_now_text();
  for (const auto& result : results) out << db::audit_checkpoint_text(*keys, result, now);
  return exit_ok;
}

int audit_pubkey(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {});
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  const crypto::signing_key& signer = keys->signing();
  if (parsed.json) {
    std::string json = "{\"key_id\":";
    core::append_json_string(signer.key_id(), json);
    json += ",\"algorithm\":\"ed25519\",\"public_key_hex\":";
    core::append_json_string(crypto::to_hex(signer.verification_key()), json);
    json += ",\"pem\":";
    core::append_json_string(crypto::public_key_pem(signer.verification_key()), json);
    out << json << "}\n";
  } else {
    out << crypto::public_key_pem(signer.verification_key());
  }
  return exit_ok;
}

}  // namespace

int command_audit(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view sub = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view{};
  if (sub != "verify" && sub != "checkpoint" && sub != "pubkey") {
    throw usage_error{"expected 'audit verify|checkpoint|pubkey' (see bankworker --help)"};
  }
  settings config = load_or_throw(env, {.database = true, .root_key = true});
  if (sub == "verify") return audit_verify(parsed, config, out);
  if (sub == "checkpoint") return audit_checkpoint(parsed, config, out);
  return audit_pubkey(parsed, config, out);
}

}  // namespace bankworker::worker
