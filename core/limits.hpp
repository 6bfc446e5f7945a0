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
// How long opening one database connection may take (BANKWORKER_DATABASE_CONNECT_TIMEOUT, whole
// seconds): TCP, TLS and authentication together. The pool refuses a connect timeout longer than
// its longest checkout wait.
inline constexpr std::chrono::seconds database_connect_timeout_default{5};
inline constexpr std::chrono::seconds database_connect_timeout_max{60};
static_assert(database_connect_timeout_default <= database_connect_timeout_max);
static_assert(database_connect_timeout_max <= db_checkout_timeout_max);
// How long a command waits at start for one of the servers its URL names to take writes before
// it calls the URL a configuration error (exit 78): longer than a pg_auto_failover failover.
inline constexpr std::chrono::seconds startup_primary_wait{20};

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

// Stripe-Signature (connectors/stripe/signature.hpp). Stripe sends "t=<10 digits>,v1=<64 hex>",
// with one more v1 per extra signing secret during a roll and a v0 in test mode: a few hundred
// bytes. Anything longer, or with more v1 values than this, is refused as malformed before any
// hashing, so a hostile header costs at most stripe_signatures_max comparisons per secret.
inline constexpr std::size_t stripe_signature_header_bytes_max = 2048;
inline constexpr std::size_t stripe_signatures_max = 8;
// Digits in t: ten today, twelve reach the year 33658 and keep the value far from int64 overflow.
inline constexpr std::size_t stripe_signature_timestamp_digits_max = 12;
// Active signing secrets per endpoint (several only while rolling); each costs one HMAC per request.
inline constexpr std::size_t stripe_endpoint_secrets_max = 8;
// Largest whsec_… secret we store (Stripe's are 38 bytes today).
inline constexpr std::size_t stripe_webhook_secret_bytes_max = 256;
// The widest windows the settings may ask for: how old a signed timestamp may be, and how far
// ahead of our clock it may be. Stripe's libraries default to 300 s into the past.
inline constexpr std::chrono::seconds stripe_signature_tolerance_max{3600};
inline constexpr std::chrono::seconds stripe_signature_future_skew_max{300};
// `bankworker stripe connect` moves an account's unrouted events into the tenant's inbox in
// statements of stripe_connect_move_batch_events, at most stripe_connect_move_events_max in one
// run (one transaction); more than that and it says so, and running it again moves the rest.
inline constexpr std::size_t stripe_connect_move_batch_events = 1'000;
inline constexpr std::size_t stripe_connect_move_events_max = 100'000;
static_assert(stripe_connect_move_batch_events <= stripe_connect_move_events_max);

static_assert(stripe_signatures_max * (sizeof("v1=") - 1 + 64 + 1) + sizeof("t=,") - 1 +
                      stripe_signature_timestamp_digits_max <=
                  stripe_signature_header_bytes_max,
              "a header carrying the largest allowed number of v1 signatures must fit the byte limit");
static_assert(stripe_webhook_secret_bytes_max <= secret_file_bytes_max,
              "a webhook secret must fit in a secret file");
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
// NOTIFYs on the job channel start at most one claim round per this interval in each worker: the
// first after a quiet spell claims at once, the rest of a burst are folded into one claim at the
// interval's end. Anyone who can connect to the database may NOTIFY, so a storm must not turn into
// a claim statement per notification. 100 ms keeps a storm to 10 claims a second (the poll adds
// one), a small load next to the jobs themselves, while a job enqueued right behind another waits
// at most a tenth of the poll interval longer; under load claims are woken by finished jobs and by
// claims that found work, neither of which is debounced.
inline constexpr std::chrono::milliseconds job_notify_debounce_ms{100};
// /readyz asks the database at most once per this interval however often it is called (a load
// balancer probing every 100 ms, or a flood): its answer may be this old.
inline constexpr std::chrono::milliseconds readyz_database_check_interval_ms{1'000};
// A job whose worker died is available again within this long after its lease expired.
inline constexpr std::chrono::milliseconds job_rescue_after_expiry_max{30'000};
inline constexpr std::chrono::milliseconds job_rescue_interval_max{10'000};
inline constexpr std::chrono::milliseconds job_drain_timeout_max{600'000};

static_assert(job_attempts_default <= job_attempts_max);
static_assert(concurrency_max <= job_batch_max, "one claim must be able to fill every free slot");
static_assert(job_notify_debounce_ms < job_poll_interval_max,
              "debouncing notifications never costs a job more latency than polling would");
static_assert(job_rescue_interval_max + job_poll_interval_max <= job_rescue_after_expiry_max,
              "rescue runs often enough to put a lost job back within job_rescue_after_expiry_max");

static_assert(secret_file_bytes_max <= env_value_bytes_max,
              "a secret read from a file must fit where an environment value would");

}  // namespace bankworker::limits
