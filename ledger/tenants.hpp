#pragma once
// Tenant onboarding: a tenant's row, its first key version, its chart of accounts and its first
// audit row, created together; a tenant's name check and summary. Here rather than in db/ because
// creating a tenant creates its ledger, and db/ is plumbing that knows no ledger.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"

namespace bankworker::ledger {

// Why a tenant name is unacceptable, or nothing when it is fine: 1..tenant_name_bytes_max bytes of
// valid UTF-8 without control characters.
std::optional<std::string> check_tenant_name(std::string_view name);

// Creates a tenant with a fresh random id, inside its own tenant scope, and returns the id. In the
// same transaction: version 1 of the tenant's key, its chart of accounts (ensure_chart) and the first
// audit row (tenant.created).
// The name must have passed check_tenant_name.
core::uuid create_tenant(db::pool& connections, db::key_store& keys, std::string_view name, std::string_view actor = "cli");

struct tenant_summary {
  core::uuid id;
  std::string name;
  std::string status;      // active, offboarded
  std::string created_at;  // ISO 8601 UTC
  std::int64_t connections = 0;
};
// The transaction's tenant (run it inside with_tenant: row-level security shows only that one),
// or nothing when it does not exist.
std::optional<tenant_summary> describe_tenant(pqxx::transaction_base& tx);

}  // namespace bankworker::ledger
