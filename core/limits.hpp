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

// Operator commands (migrate, key rotation) on their own connection: generous, never unbounded.
inline constexpr std::chrono::milliseconds operator_statement_timeout{15 * 60'000};
inline constexpr std::chrono::milliseconds operator_lock_timeout{30'000};
inline constexpr std::chrono::milliseconds operator_idle_in_transaction_timeout{60'000};

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

static_assert(secret_file_bytes_max <= env_value_bytes_max,
              "a secret read from a file must fit where an environment value would");

}  // namespace bankworker::limits
