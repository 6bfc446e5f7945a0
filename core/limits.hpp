#pragma once
// A limit on everything (STYLE.md §5), unit last. Limits that must agree are related at compile
// time so that changing one cannot silently break another.

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace bankworker::limits {

// Database pool: a fixed number of connections, and a bounded wait for one.
inline constexpr std::size_t db_connections_max = 64;
inline constexpr std::chrono::milliseconds db_checkout_timeout_max{60'000};
inline constexpr std::chrono::milliseconds db_statement_timeout_max{600'000};

// Jobs run at once in one process; each one needs at most one database connection at a time.
inline constexpr std::uint32_t concurrency_max = 1024;

// Migrations: how many files, and how large one may be.
inline constexpr std::size_t migrations_max = 9999;
inline constexpr std::size_t migration_bytes_max = 1 << 20;

// Configuration: one secret or key file, one environment value, one tenant name.
inline constexpr std::size_t secret_file_bytes_max = 4096;
inline constexpr std::size_t env_value_bytes_max = 4096;
inline constexpr std::size_t tenant_name_bytes_max = 200;

// Logging: a line longer than this is truncated (and says so) rather than flooding stderr.
inline constexpr std::size_t log_line_bytes_max = 16 * 1024;

// Webhook bodies are hashed and stored; anything larger is refused with 413 before hashing.
inline constexpr std::size_t webhook_body_bytes_max = 1 << 20;

// Envelope encryption (crypto/envelope.hpp, DESIGN.md §5). A sealed secret is a token or key, never
// a document: the plaintext bound keeps every envelope far inside the database's column check.
inline constexpr std::size_t sealed_plaintext_bytes_max = 8192;
inline constexpr std::size_t envelope_bytes_max = 65536;  // sealed_secrets.envelope CHECK
inline constexpr std::size_t aad_field_bytes_max = 256;   // purpose, subject id, environment
// Unwrapped tenant keys kept in guarded memory, and for how long: a destroyed or retired key stays
// usable by another running process for at most the TTL (see crypto/README.md).
inline constexpr std::size_t kek_cache_entries_max = 4096;
inline constexpr std::chrono::seconds kek_cache_ttl_max{3600};
// Key versions per tenant (each rotation adds one; retired versions keep their metadata).
inline constexpr std::uint32_t kek_versions_max = 100'000;
// `keys rewrap` works in batches, each its own short transaction, so it runs online.
inline constexpr std::size_t rewrap_batch_rows_max = 10'000;
// Audit rows: the free-text fields and the details document (ids and keyed hashes only).
inline constexpr std::size_t audit_details_bytes_max = 4096;
// `audit verify` reads a tenant's chain in pages of this many rows.
inline constexpr std::size_t audit_verify_page_rows = 1000;
// Tenants one operator command walks (rewrap, rotate --root, verify, checkpoint).
inline constexpr std::size_t tenants_per_command_max = 1'000'000;

static_assert(sealed_plaintext_bytes_max + 1024 <= envelope_bytes_max,
              "an envelope is the plaintext plus a header well under 1 KiB");

static_assert(secret_file_bytes_max <= env_value_bytes_max,
              "a secret read from a file must fit where an environment value would");

}  // namespace bankworker::limits
