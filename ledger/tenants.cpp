#include "ledger/tenants.hpp"

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "core/json_text.hpp"
#include "crypto/random.hpp"
#include "db/audit.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::ledger {

namespace {

constexpr const char* describe_tenant_sql =
    "SELECT t.tenant_id::text, t.name, t.status, to_char(t.created_at AT TIME ZONE 'UTC', $1),"
    " (SELECT count(*) FROM bankworker.connections c WHERE c.tenant_id = t.tenant_id)"
    " FROM bankworker.tenants t";
constexpr const char* insert_tenant_sql = "INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, $2)";

// Length of the UTF-8 sequence starting with `lead`, or 0 if `lead` cannot start one.
std::size_t utf8_sequence_bytes(unsigned char lead) noexcept {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool is_valid_utf8(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t length = utf8_sequence_bytes(lead);
    if (length == 0 || i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    if (length == 3) {
      const auto second = static_cast<unsigned char>(text[i + 1]);
      if (lead == 0xE0 && second < 0xA0) return false;   // overlong
      if (lead == 0xED && second >= 0xA0) return false;  // surrogate
    }
    if (length == 4) {
      const auto second = static_cast<unsigned char>(text[i + 1]);
      if (lead == 0xF0 && second < 0x90) return false;   // overlong
      if (lead == 0xF4 && second >= 0x90) return false;  // beyond U+10FFFF
    }
    i += length;
  }
  return true;
}

}  // namespace

std::optional<std::string> check_tenant_name(std::string_view name) {
  if (name.empty()) return "tenant name is empty";
  if (name.size() > limits::tenant_name_bytes_max) {
    return "tenant name is longer than tenant_name_bytes_max (" + std::to_string(limits::tenant_name_bytes_max) +
           " bytes)";
  }
  if (!is_valid_utf8(name)) return "tenant name is not valid UTF-8";
  for (const char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "tenant name contains a control character";
  }
  return std::nullopt;
}

core::uuid create_tenant(db::pool& connections, db::key_store& keys, std::string_view name, std::string_view actor) {
  BW_ASSERT(!check_tenant_name(name));
  keys.prepare(connections);
  const core::uuid tenant = crypto::random_uuid();
  db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
    tx.exec_params0(insert_tenant_sql, tenant.to_string(), std::string(name));
    ensure_chart(tx);  // the tenant's chart of accounts is created with it
    const std::uint32_t version = keys.create_tenant_key(tx, tenant);
    // The name is the customer's text, not a secret, but the audit log keeps ids only.
    db::append_audit(tx, keys,
                     {.tenant = tenant,
                      .actor = actor,
                      .action = "tenant.created",
                      .subject = tenant.to_string(),
                      .details = "{\"kek_version\":" + std::to_string(version) + "}"});
  });
  return tenant;
}

std::optional<tenant_summary> describe_tenant(pqxx::transaction_base& tx) {
  const pqxx::result rows = tx.exec_params(describe_tenant_sql, "YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"");
  if (rows.empty()) return std::nullopt;
  BW_INVARIANT(rows.size() == 1);  // row-level security shows the scoped tenant only
  const auto id = core::uuid::parse(rows[0][0].as<std::string>());
  BW_INVARIANT(id.has_value());
  return tenant_summary{.id = *id,
                        .name = rows[0][1].as<std::string>(),
                        .status = rows[0][2].as<std::string>(),
                        .created_at = rows[0][3].as<std::string>(),
                        .connections = rows[0][4].as<std::int64_t>()};
}

}  // namespace bankworker::ledger
