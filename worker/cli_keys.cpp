// Key commands: `keys status`, `keys rotate --tenant T`,
// `keys rotate --root [--root-key-file F] [--new-tenant-keys [--batch-rows N]]`,
// `keys rewrap [--tenant T]`, `keys destroy --tenant T --yes-destroy-all-keys`.
#include <charconv>
#include <filesystem>
#include <string>

#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "db/keys.hpp"
#include "db/tenant_scope.hpp"
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
using service::configured_root_keys;
using service::open_key_store;
using service::tenant_option;
using service::throw_database_failure;
using service::settings;
using service::env_lookup;

namespace {

constexpr std::string_view actor = "cli";
constexpr std::string_view destroy_confirmation_flag = "--yes-destroy-all-keys";

// The tenants a command applies to: the one named by --tenant, or every tenant.
std::vector<core::uuid> chosen_tenants(const parsed_args& parsed, db::pool& connections) {
  if (parsed.option("--tenant")) return {tenant_option(parsed)};
  return db::list_tenants(connections);
}

// Runs one key operation, turning its failures into a one-line command_error.
template <class Work>
auto run_key_operation(std::string_view doing, Work&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const db::key_error& error) {
    throw command_error{std::string(doing) + ": " + one_line(error.what())};
  } catch (const crypto::root_key_error& error) {
    throw command_error{std::string(doing) + ": " + one_line(error.what())};
  } catch (const crypto::envelope_error& error) {
    throw command_error{std::string(doing) + ": " + one_line(error.what())};
  } catch (const pqxx::broken_connection& error) {
    throw command_error{"cannot connect to the database: " + one_line(error.what())};
  } catch (const pqxx::sql_error& error) {
    throw_database_failure(doing, error);
  }
}

std::size_t batch_rows_option(const parsed_args& parsed) {
  const std::optional<std::string_view> text = parsed.option("--batch-rows");
  if (!text) return db::key_store_settings{}.rewrap_batch_rows;
  std::size_t value = 0;
  const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (error != std::errc{} || end != text->data() + text->size() || value == 0 ||
      value > limits::rewrap_batch_rows_max) {
    throw usage_error{"--batch-rows: expected 1.." + std::to_string(limits::rewrap_batch_rows_max)};
  }
  return value;
}

int keys_status(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant"});
  const auto connections = open_worker_pool(config);
  std::string json = "{\"tenants\":[";
  run_key_operation("keys status", [&] {
    bool first_tenant = true;
    for (const core::uuid& tenant : chosen_tenants(parsed, *connections)) {
      const auto versions =
          db::with_tenant(*connections, tenant, [&](pqxx::work& tx) { return db::key_status(tx, tenant); });
      if (parsed.json) {
        if (!first_tenant) json.push_back(',');
        json += "{\"tenant_id\":";
        core::append_json_string(tenant.to_string(), json);
        json += ",\"versions\":[";
        for (std::size_t i = 0; i < versions.size(); ++i) {
          if (i > 0) json.push_back(',');
          json += "{\"version\":" + std::to_string(versions[i].version) + ",\"state\":";
          core::append_json_string(versions[i].state, json);
          json += ",\"root_key_id\":";
          core::append_json_string(versions[i].root_key_id, json);
          json += ",\"legacy_secrets\":" + std::to_string(versions[i].legacy_secrets) +
                  ",\"secrets\":" + std::to_string(versions[i].secrets) + "}";
        }
        json += "]}";
      } else {
        out << "tenant " << tenant.to_string() << '\n';
        for (const auto& v : versions) {
          out << "  version " << v.version << "  " << v.state << "  root " << v.root_key_id << "  secrets " << v.secrets
              << "  legacy " << v.legacy_secrets << '\n';
        }
      }
      first_tenant = false;
    }
  });
  if (parsed.json) out << json << "]}\n";
  return exit_ok;
}

// What `keys rotate --root --new-tenant-keys` did after the root rewrap, summed over tenants.
struct renewal_totals {
  std::size_t tenants = 0;
  std::size_t resealed = 0;
  std::size_t rewrapped = 0;
  std::size_t retired = 0;
  std::size_t remaining = 0;
};

// The new root key: NEW when --root-key-file names it, else the configured primary (Vault, or
// BANKWORKER_ROOT_KEY_FILE with the old key as BANKWORKER_ROOT_KEY_PREVIOUS_FILE); every other
// configured key is a source. Null when the target is the configured primary.
std::unique_ptr<crypto::root_key_provider> new_root_key(const parsed_args& parsed, settings& config,
                                                        std::string& new_id) {
  std::unique_ptr<crypto::root_key_provider> fresh;
  std::vector<std::string> configured_ids;
  for (const auto& provider : configured_root_keys(config)) configured_ids.push_back(provider->key_id());
  if (const std::optional<std::string_view> file = parsed.option("--root-key-file")) {
    try {
      fresh = crypto::file_root_key::load(std::filesystem::path(std::string(*file)));
    } catch (const crypto::root_key_error& error) {
      throw command_error{one_line(error.what())};
    }
    if (fresh->key_id() == configured_ids.front()) {
      throw usage_error{"--root-key-file holds the current root key; generate a new one (openssl rand -hex 32)"};
    }
  } else if (configured_ids.size() < 2) {
    throw usage_error{"keys rotate --root needs a new root key: --root-key-file NEW_KEY_FILE (64 hex characters, "
                      "mode 0600), or BANKWORKER_VAULT_ADDR, or the old key as BANKWORKER_ROOT_KEY_PREVIOUS_FILE"};
  }
  new_id = fresh ? fresh->key_id() : configured_ids.front();
  return fresh;
}

void print_root_rotation(const parsed_args& parsed, const std::string& new_id, std::size_t tenants,
                         std::size_t versions, std::size_t signing_keys, const std::optional<renewal_totals>& renewed,
                         std::ostream& out) {
  if (parsed.json) {
    std::string json = "{\"root_key_id\":";
    core::append_json_string(new_id, json);
    json += ",\"tenants\":" + std::to_string(tenants) + ",\"key_versions_rewrapped\":" + std::to_string(versions) +
            ",\"signing_keys_rewrapped\":" + std::to_string(signing_keys);
    if (renewed) {
      json += ",\"new_tenant_keys\":{\"tenants\":" + std::to_string(renewed->tenants) +
              ",\"resealed\":" + std::to_string(renewed->resealed) + ",\"rewrapped\":" +
              std::to_string(renewed->rewrapped) + ",\"retired\":" + std::to_string(renewed->retired) +
              ",\"remaining\":" + std::to_string(renewed->remaining) + "}";
    }
    out << json << "}\n";
    return;
  }
  out << "root key " << new_id << ": rewrapped " << versions << " tenant key versions of " << tenants
      << " tenants and " << signing_keys << " audit signing keys\n";
  if (renewed) {
    out << "new tenant keys: " << renewed->tenants << " tenants have a new primary version; resealed "
        << renewed->resealed << " legacy secrets, rewrapped " << renewed->rewrapped << " secrets, retired "
        << renewed->retired << " old versions; remaining " << renewed->remaining << '\n';
  }
  out << "next: configure " << new_id << " as the root key of every worker (BANKWORKER_ROOT_KEY_FILE or "
         "BANKWORKER_VAULT_ADDR), keeping the old key as BANKWORKER_ROOT_KEY_PREVIOUS_FILE until every worker "
         "has restarted; then destroy the old key\n";
}

// `keys rotate --root [--root-key-file NEW] [--new-tenant-keys [--batch-rows N]]`. With
// --new-tenant-keys every tenant also gets a new primary version (wrapped by NEW) and every secret
// moves to it, so the old versions retire: once the old root key is destroyed, no backup taken
// before (whose tenant keys are wrapped by the old root) opens with anything that exists.
int keys_rotate_root(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--root", "--root-key-file", "--new-tenant-keys", "--batch-rows"});
  const bool renew = parsed.flag("--new-tenant-keys");
  if (!renew && parsed.option("--batch-rows")) throw usage_error{"--batch-rows goes with --new-tenant-keys"};
  const std::size_t batch_rows = batch_rows_option(parsed);
  std::string new_id;
  std::unique_ptr<crypto::root_key_provider> fresh = new_root_key(parsed, config, new_id);
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections, std::move(fresh));
  std::size_t versions = 0;
  std::size_t tenants = 0;
  std::size_t signing_keys = 0;
  std::optional<renewal_totals> renewed;
  run_key_operation("keys rotate --root", [&] {
    const std::vector<core::uuid> all = db::list_tenants(*connections);
    for (const core::uuid& tenant : all) {
      versions += db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        return keys->rewrap_tenant_keys_to_primary_root(tx, tenant, actor);
      });
      ++tenants;
    }
    signing_keys = keys->rewrap_signing_keys_to_primary_root(*connections);
    if (!renew) return;
    renewed.emplace();
    for (const core::uuid& tenant : all) {
      const db::rewrap_report report = keys->replace_tenant_key(*connections, tenant, actor, batch_rows);
      if (report.primary_version != 0) ++renewed->tenants;
      renewed->resealed += report.resealed;
      renewed->rewrapped += report.rewrapped;
      renewed->retired += report.retired.size();
      renewed->remaining += report.remaining;
    }
  });
  print_root_rotation(parsed, new_id, tenants, versions, signing_keys, renewed, out);
  if (renewed && renewed->remaining > 0) {
    throw command_error{std::to_string(renewed->remaining) +
                        " secrets are still under an older key version (locked by another rewrap?); run keys rewrap"};
  }
  return exit_ok;
}

int keys_rotate(const parsed_args& parsed, settings& config, std::ostream& out) {
  if (parsed.flag("--root")) return keys_rotate_root(parsed, config, out);
  expect_only(parsed, 2, {"--tenant"});
  const core::uuid tenant = tenant_option(parsed);
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  const std::uint32_t version = run_key_operation("keys rotate", [&] {
    return db::with_tenant(*connections, tenant,
                           [&](pqxx::work& tx) { return keys->rotate_tenant_key(tx, tenant, actor); });
  });
  if (parsed.json) {
    std::string json = "{\"tenant_id\":";
    core::append_json_string(tenant.to_string(), json);
    out << json << ",\"version\":" << version << "}\n";
  } else {
    out << "tenant " << tenant.to_string() << ": key version " << version
        << " is primary; older versions open what they sealed until 'bankworker keys rewrap' moves it\n";
  }
  return exit_ok;
}

int keys_rewrap(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant", "--batch-rows"});
  const std::size_t batch_rows = batch_rows_option(parsed);
  const auto connections = open_worker_pool(config);
  const auto loaded = open_key_store(config, *connections);
  std::string json = "{\"tenants\":[";
  std::size_t remaining = 0;
  run_key_operation("keys rewrap", [&] {
    bool first = true;
    for (const core::uuid& tenant : chosen_tenants(parsed, *connections)) {
      const db::rewrap_report report = loaded->rewrap_tenant(*connections, tenant, actor, batch_rows);
      remaining += report.remaining;
      std::string retired;
      for (std::size_t i = 0; i < report.retired.size(); ++i) {
        if (i > 0) retired.push_back(',');
        retired += std::to_string(report.retired[i]);
      }
      if (parsed.json) {
        if (!first) json.push_back(',');
        json += "{\"tenant_id\":";
        core::append_json_string(tenant.to_string(), json);
        json += ",\"primary_version\":" + std::to_string(report.primary_version) +
                ",\"resealed\":" + std::to_string(report.resealed) + ",\"rewrapped\":" + std::to_string(report.rewrapped) +
                ",\"batches\":" + std::to_string(report.batches) + ",\"remaining\":" + std::to_string(report.remaining) +
                ",\"retired\":[" + retired + "],\"legacy_remaining\":" + std::to_string(report.legacy_remaining) + "}";
      } else {
        out << "tenant " << tenant.to_string() << ": resealed " << report.resealed << " legacy secrets and rewrapped "
            << report.rewrapped << " secrets in " << report.batches << " batches to version " << report.primary_version
            << "; retired [" << retired << "]; remaining " << report.remaining << "; legacy remaining "
            << report.legacy_remaining << '\n';
      }
      first = false;
    }
  });
  if (parsed.json) out << json << "]}\n";
  if (remaining > 0) {
    throw command_error{std::to_string(remaining) +
                        " secrets are still under an older key version (locked by another rewrap?); run keys rewrap again"};
  }
  return exit_ok;
}

int keys_destroy(const parsed_args& parsed, settings& config, std::ostream& out) {
  expect_only(parsed, 2, {"--tenant", destroy_confirmation_flag});
  const core::uuid tenant = tenant_option(parsed);
  if (!parsed.flag(destroy_confirmation_flag)) {
    throw usage_error{"keys destroy erases every key of tenant " + tenant.to_string() +
                      " and shreds all its secrets, irreversibly; add " + std::string(destroy_confirmation_flag)};
  }
  const auto connections = open_worker_pool(config);
  const auto keys = open_key_store(config, *connections);
  const std::size_t shredded = run_key_operation("keys destroy", [&] {
    return db::with_tenant(*connections, tenant,
                           [&](pqxx::work& tx) { return keys->destroy_tenant_keys(tx, tenant, actor); });
  });
  if (parsed.json) {
    std::string json = "{\"tenant_id\":";
    core::append_json_string(tenant.to_string(), json);
    out << json << ",\"secrets_shredded\":" << shredded << "}\n";
  } else {
    out << "tenant " << tenant.to_string() << ": every key version destroyed, " << shredded
        << " secrets shredded; key metadata and the audit log remain\n";
  }
  return exit_ok;
}

}  // namespace

int command_keys(const parsed_args& parsed, const env_lookup& env, std::ostream& out) {
  const std::string_view sub = parsed.words.size() >= 2 ? parsed.words[1] : std::string_view{};
  if (sub != "status" && sub != "rotate" && sub != "rewrap" && sub != "destroy") {
    throw usage_error{"expected 'keys status|rotate|rewrap|destroy' (see bankworker --help)"};
  }
  settings config = load_or_throw(env, {.database = true, .root_key = sub != "status"});
  if (sub == "status") return keys_status(parsed, config, out);
  if (sub == "rotate") return keys_rotate(parsed, config, out);
  if (sub == "rewrap") return keys_rewrap(parsed, config, out);
  return keys_destroy(parsed, config, out);
}

}  // namespace bankworker::worker
