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

// Job queue (queue/, db/migrations/0003_jobs.sql repeats the database-side ones in CHECKs).
inline constexpr std::uint32_t job_attempts_default = 25;
inline constexpr std::uint32_t job_attempts_max = 100;
inline constexpr std::size_t job_payload_bytes_max = 64 * 1024;
inline constexpr std::size_t job_error_bytes_max = 2048;
inline constexpr std::size_t job_kind_bytes_max = 64;
inline constexpr std::size_t job_unique_key_bytes_max = 256;
// One enqueue, claim or completion statement handles at most this many jobs.
inline constexpr std::size_t job_batch_max = 10'000;
inline constexpr std::size_t job_prune_batch_max = 100'000;
inline constexpr std::chrono::milliseconds job_lease_min{1'000};
inline constexpr std::chrono::milliseconds job_lease_max{3'600'000};
inline constexpr std::chrono::milliseconds job_backoff_max{3'600'000};
// Lost notifications cost at most this much latency: the dispatcher polls at least this often.
inline constexpr std::chrono::milliseconds job_poll_interval_max{1'000};
// A job whose worker died is available again within this long after its lease expired.
inline constexpr std::chrono::milliseconds job_rescue_after_expiry_max{30'000};
inline constexpr std::chrono::milliseconds job_rescue_interval_max{10'000};
inline constexpr std::chrono::milliseconds job_drain_timeout_max{600'000};

static_assert(job_attempts_default <= job_attempts_max);
static_assert(concurrency_max <= job_batch_max, "one claim must be able to fill every free slot");
static_assert(job_rescue_interval_max + job_poll_interval_max <= job_rescue_after_expiry_max,
              "rescue runs often enough to put a lost job back within job_rescue_after_expiry_max");

static_assert(secret_file_bytes_max <= env_value_bytes_max,
              "a secret read from a file must fit where an environment value would");

}  // namespace bankworker::limits
