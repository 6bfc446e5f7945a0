#pragma once
// Tenants: the root of every tenant-scoped row.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"

namespace bankworker::db {

// Why a tenant name is unacceptable, or nothing when it is fine: 1..tenant_name_bytes_max bytes of
// valid UTF-8 without control characters.
std::optional<std::string> check_tenant_name(std::string_view name);

// Creates a tenant with a fresh random id, inside its own tenant scope, and returns the id. In the
// same transaction: version 1 of the tenant's key and the first audit row (tenant.created).
// The name must have passed check_tenant_name.
core::uuid create_tenant(pool& connections, key_store& keys, std::string_view name, std::string_view actor = "cli");

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

}  // namespace bankworker::db
