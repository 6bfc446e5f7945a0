#include "db/scope_keys.hpp"

#include <sodium.h>

#include <pqxx/pqxx>

#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "db/audit.hpp"

namespace bankworker::db {

namespace {

// The key crosses to the server as hex text inside the statement's parameters (libpqxx copies
// parameters into its own buffers); it is stored there anyway, as the two padded HMAC blocks.
constexpr const char* add_sql = "SELECT bankworker.add_scope_key($1, decode($2, 'hex'))";
constexpr const char* list_sql =
    "SELECT key_id, fingerprint, created_at::text, retired_at::text FROM bankworker.list_scope_keys()";
constexpr const char* retire_sql = "SELECT bankworker.retire_scope_key($1)";
constexpr const char* fingerprint_sql = "SELECT fingerprint FROM bankworker.list_scope_keys() WHERE key_id = $1";

// One audit row in every tenant's chain, in `tx`: a scope key decides who can read every tenant.
void audit_every_tenant(pqxx::work& tx, const key_store& keys, std::string_view action, std::string_view key_id,
                        std::string_view fingerprint, std::string_view actor) {
  std::string details = "{\"key_id\":";
  core::append_json_string(key_id, details);
  details += ",\"fingerprint\":";
  core::append_json_string(fingerprint, details);
  details += "}";
  const std::string subject = "scope_key:" + std::string(key_id);
  append_audit_every_tenant(tx, keys, {.tenant = {}, .actor = actor, .action = action, .subject = subject,
                                       .details = std::move(details)});
}

}  // namespace

crypto::secret parse_scope_key(const crypto::secret& file_content, std::string& why) {
  const crypto::secret::view text = file_content.reveal();
  if (text.size() != 2 * scope_key_bytes) {
    why = "a scope key file holds exactly 64 hex digits (32 bytes), for example from `openssl rand -hex 32`";
    return {};
  }
  bool valid = true;
  crypto::secret key = crypto::secret::filled(scope_key_bytes, [&](unsigned char* bytes) {
    std::size_t written = 0;
    valid = sodium_hex2bin(bytes, scope_key_bytes, text.text().data(), text.size(), nullptr, &written, nullptr) == 0 &&
            written == scope_key_bytes;
    return valid;
  });
  if (!valid) {
    why = "a scope key file holds exactly 64 hex digits (32 bytes), for example from `openssl rand -hex 32`";
    return {};
  }
  return key;
}

std::string add_scope_key(pool& connections, const key_store& keys, std::string_view key_id,
                          const crypto::secret& key, std::string_view actor) {
  std::string hex(2 * key.size(), '\0');
  {
    const crypto::secret::view bytes = key.reveal();
    sodium_bin2hex(hex.data(), hex.size() + 1, reinterpret_cast<const unsigned char*>(bytes.text().data()),
                   bytes.size());
  }
  pool::lease lease = connections.checkout();
  std::string fingerprint;
  try {
    pqxx::work tx(lease.connection(), "bankworker_scope_key_add");
    fingerprint = tx.exec_params1(add_sql, std::string(key_id), hex)[0].as<std::string>();
    sodium_memzero(hex.data(), hex.size());
    audit_every_tenant(tx, keys, "scope_key.added", key_id, fingerprint, actor);
    lease.commit(tx);
  } catch (...) {
    sodium_memzero(hex.data(), hex.size());
    throw;
  }
  return fingerprint;
}

std::vector<scope_key_info> list_scope_keys(pool& connections) {
  pool::lease lease = connections.checkout();
  pqxx::read_transaction tx(lease.connection(), "bankworker_scope_key_list");
  std::vector<scope_key_info> out;
  for (const auto& row : tx.exec(list_sql)) {
    scope_key_info info{row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(), std::nullopt};
    if (!row[3].is_null()) info.retired_at = row[3].as<std::string>();
    out.push_back(std::move(info));
  }
  return out;
}

bool retire_scope_key(pool& connections, const key_store& keys, std::string_view key_id, std::string_view actor) {
  pool::lease lease = connections.checkout();
  pqxx::work tx(lease.connection(), "bankworker_scope_key_retire");
  if (!tx.exec_params1(retire_sql, std::string(key_id))[0].as<bool>()) return false;
  const std::string fingerprint = tx.exec_params1(fingerprint_sql, std::string(key_id))[0].as<std::string>();
  audit_every_tenant(tx, keys, "scope_key.retired", key_id, fingerprint, actor);
  lease.commit(tx);
  return true;
}

}  // namespace bankworker::db
