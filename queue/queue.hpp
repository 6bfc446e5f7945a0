#pragma once
// The job queue in PostgreSQL (bankworker.jobs, db/migrations/0003_jobs.sql).
//
// Every statement is a prepared call of one SECURITY DEFINER function, so the worker runs the
// machinery across tenants without seeing tenant data (see the migration's header). Each is
// prepared on a connection at its first use there (db/statement.hpp).
//
// Lease ownership and effects. A handler whose lease was lost (it was cancelled, or its worker was
// presumed dead and the job rescued) must not commit its effect. Handlers that write to the database
// call complete_in() in the same transaction as their effect: complete_jobs updates the job only
// while this owner still holds the lease, and the row lock it takes keeps a rescue out until that
// transaction ends, so either the effect and the completion commit together or neither does.
// Effects outside the database (a provider call) cannot be rolled back; those handlers make the
// effect idempotent with a key instead, and the in_doubt outcome reconciles by that key.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/pool.hpp"
#include "queue/backoff.hpp"
#include "queue/job.hpp"

namespace bankworker::queue {

// NOTIFY channel: enqueue functions notify it; the listener LISTENs on it.
inline constexpr const char* notify_channel = "bankworker_jobs";

using clock_function = std::function<time_point()>;

struct queue_settings {
  std::chrono::milliseconds lease{60'000};
  backoff_settings backoff;
  // Empty: the database's clock decides (production). Tests inject one to move time forward.
  clock_function clock;
  // Seeds the jitter; 0 picks a random seed. A failing test prints the seed it used.
  std::uint64_t seed = 0;
};

// The settings are out of range (a lease outside job_lease_min..job_lease_max, …).
class queue_settings_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A new job failed check_new_job; the message says which limit or rule.
class job_rejected : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Enqueues in the caller's transaction (so a job exists only if the caller's work commits), with
// one statement per job_batch_max jobs. Returns the ids inserted; a job whose unique key already
// waits is skipped and has no id in the answer. Workers are notified when the transaction commits.
std::vector<std::int64_t> enqueue(pqxx::transaction_base& tx, std::span<const new_job> jobs);

struct completed {
  job_ref ref;
  job_state state;
};

// What cancel or retry did: the job's state afterwards, and whether the call changed it (cancelling
// a finished job, or retrying one that is waiting or running, changes nothing).
struct job_change {
  job_state state = job_state::available;
  bool changed = false;
};

struct list_filter {
  std::optional<job_state> state;
  std::optional<std::string> kind;
  std::optional<core::uuid> tenant;
  std::size_t limit = 100;
};

struct job_summary {
  std::int64_t id = 0;
  core::uuid tenant;
  std::string kind;
  job_state state = job_state::available;
  std::int16_t priority = 0;
  std::uint32_t attempt = 0;
  std::uint32_t attempts_max = 0;
  std::string run_at;       // as PostgreSQL prints timestamptz
  std::string created_at;
  std::optional<std::string> finished_at;
  std::optional<std::string> failure;
  std::optional<std::string> last_error;
};

// One attempt of a job that did not succeed (migration 0039): a retry, in_doubt,
// needs_user_action or permanent outcome, or a lease that expired. `worker` is the lease owner's
// id, which `bankworker run` logs at start as worker_id. The error is stored redacted.
struct job_attempt {
  std::uint32_t attempt = 0;
  std::string outcome;
  std::optional<std::string> error;
  std::optional<std::string> worker;
  std::optional<std::string> started_at;  // as PostgreSQL prints timestamptz
  std::string finished_at;
};

// Everything the queue holds about one job (`jobs show`). The payload is as stored: mask it
// (crypto::redact) before it leaves the process.
struct job_details {
  job_summary summary;
  std::optional<std::string> started_at;
  bool in_doubt = false;
  std::optional<std::string> connection;
  std::optional<std::string> unique_key;
  std::string payload;  // JSON text
  // The attempts that did not succeed, newest first, at most job_attempts_shown_max.
  std::vector<job_attempt> attempts;
};

// job_attempts() returns at most this many attempts (the newest).
inline constexpr std::size_t job_attempts_shown_max = 100;

// Which jobs a bulk retry or cancel takes; at most `limit` (1..job_batch_max), oldest first.
struct change_filter {
  std::optional<job_state> state;
  std::optional<std::string> kind;
  std::optional<core::uuid> tenant;
  std::size_t limit = 1000;
  bool dry_run = false;  // only name the jobs
};

// One job a bulk change matched: its state before, and whether it changed (false in a dry run,
// and for a revival refused because a job with the same unique key is already waiting).
struct matched_job {
  std::int64_t id = 0;
  core::uuid tenant;
  std::string kind;
  job_state state = job_state::available;
  bool changed = false;
};

class job_queue {
 public:
  // `connections` must outlive the queue.
  job_queue(db::pool& connections, queue_settings settings);

  const queue_settings& settings() const noexcept { return settings_; }
  std::uint64_t seed() const noexcept { return seed_; }

  // Enqueue in a transaction of its own.
  std::vector<std::int64_t> enqueue(std::span<const new_job> jobs);

  // Claims up to `limit` (1..job_batch_max) ready jobs for `owner`, fairly across tenants,
  // leaving jobs of `skip_kinds` for later.
  std::vector<job> claim(const core::uuid& owner, std::size_t limit, std::span<const std::string> skip_kinds = {});

  // Renews leases; returns the jobs whose lease `owner` still holds (the others were cancelled or
  // rescued: their handlers must stop).
  std::vector<job_ref> extend_leases(const core::uuid& owner, std::span<const job_ref> jobs);

  // Records many outcomes in one statement. Jobs whose lease was lost are missing from the answer.
  std::vector<completed> complete(const core::uuid& owner, std::span<const completion> outcomes);

  // Records one outcome inside the caller's transaction (the one that holds the handler's effect).
  // Returns the new state, or nothing when `owner` lost the lease: the caller must then abort the
  // transaction so the effect does not commit.
  std::optional<job_state> complete_in(pqxx::transaction_base& tx, const core::uuid& owner,
                                       const completion& outcome);
  // Many outcomes inside the caller's transaction, in one statement (a handler that does the work
  // of many jobs in one transaction). Jobs whose lease was lost are missing from the answer; the
  // caller must then abort the transaction if any of their effects is in it.
  std::vector<completed> complete_in(pqxx::transaction_base& tx, const core::uuid& owner,
                                     std::span<const completion> outcomes);

  // Puts back up to `limit` jobs whose lease expired; returns how many.
  std::size_t rescue_expired(std::size_t limit = limits::job_batch_max);

  // Gives back jobs `owner` will not finish (shutdown); their attempt does not count.
  std::size_t release(const core::uuid& owner, std::span<const job_ref> jobs);
  // Gives back every job leased to `owner` except those in `held`, their attempt uncounted; returns
  // how many. For after a claim whose answer was lost (the connection died as it committed, or the
  // commit was in doubt): those jobs are leased to `owner`, which never saw them. `held` must name
  // every job `owner` still runs or has yet to record, and no claim of `owner` may run meanwhile.
  std::size_t release_unknown(const core::uuid& owner, std::span<const job_ref> held);

  // Cancel one job (nothing when there is no such job), or every pending job of a connection
  // in the caller's transaction (revocation), except the revoking job itself.
  std::optional<job_change> cancel(std::int64_t job_id);
  std::size_t cancel_connection(pqxx::transaction_base& tx, const core::uuid& tenant, const core::uuid& connection,
                                std::optional<std::int64_t> except_job);

  // Revives a dead or cancelled job with a fresh attempt count (nothing when there is no such job).
  std::optional<job_change> retry(std::int64_t job_id);

  // Deletes finished jobs older than the retention periods, `batch` at a time, at most
  // `batches` statements; returns how many.
  std::size_t prune(std::chrono::hours done_retention, std::chrono::hours dead_retention,
                    std::size_t batch = 10'000, std::size_t batches = 100);

  std::vector<job_summary> list(const list_filter& filter);

  // One job by id, across tenants (nothing when there is no such job).
  std::optional<job_details> details(std::int64_t job_id);

  // Revives (retry, as retry()) or cancels (as cancel()) every job the filter matches, in one
  // transaction.
  std::vector<matched_job> change_many(bool retry, const change_filter& filter);

  // The delay before a retry of `attempt`: the handler's own when it gave one, else backoff.
  std::chrono::milliseconds retry_delay(const completion& outcome);

 private:
  std::optional<std::string> now_text() const;

  db::pool& connections_;
  const queue_settings settings_;
  std::uint64_t seed_;
  std::mutex random_mutex_;
  std::mt19937_64 random_;  // guarded by random_mutex_
};

// Timestamp text PostgreSQL reads as timestamptz (UTC, microseconds).
std::string timestamp_text(time_point at);

// Jobs by kind and state for the operators' gauges (migration 0028): rows (kind text, state text,
// jobs bigint, oldest_due_s bigint), at most job_gauge_rows_max of them. States: available (due),
// scheduled (waiting for run_at), running, retryable (a due retry), dead. No parameters, so it can
// go in one pipelined round trip with the other gauges' statements.
inline constexpr std::size_t job_gauge_rows_max = 500;
inline constexpr const char* job_gauges_sql = "SELECT kind, state, jobs, oldest_due_s FROM bankworker.job_gauges(500)";

}  // namespace bankworker::queue
