#pragma once
// What the queue stores and hands out. The queue does not know what a job does: a kind names the
// handler, the payload is the handler's business (JSON text, bounded).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/limits.hpp"
#include "core/uuid.hpp"

namespace bankworker::queue {

using time_point = std::chrono::system_clock::time_point;

// Lower runs first (DESIGN.md §1: revocation outranks webhook postings, which outrank syncs).
namespace priority {
inline constexpr std::int16_t revoke = 0;
inline constexpr std::int16_t webhook = 10;
inline constexpr std::int16_t link = 20;
inline constexpr std::int16_t sync = 50;
inline constexpr std::int16_t maintenance = 100;
}  // namespace priority

enum class job_state { available, running, retryable, succeeded, failed, cancelled };

std::string_view to_string(job_state state) noexcept;
std::optional<job_state> parse_job_state(std::string_view text) noexcept;
// What an operator may type: the state names, and the outcome names the metrics use for the same
// states (bankworker_jobs_finished_total: dead = failed, retried = retryable).
std::optional<job_state> parse_job_state_name(std::string_view text) noexcept;

struct new_job {
  core::uuid tenant;
  std::string kind;                      // [a-z][a-z0-9_]* separated by dots, job_kind_bytes_max
  std::string payload_json = "{}";       // a JSON object, job_payload_bytes_max
  std::int16_t priority = priority::maintenance;
  std::optional<time_point> run_at;      // empty: now
  std::optional<std::string> unique_key; // one waiting and one running job per key and tenant
  std::optional<core::uuid> connection;  // lets revocation cancel the job
  std::uint32_t attempts_max = limits::job_attempts_default;
};

// Why a new job is unacceptable, or nothing when it is fine. Checked before anything is sent, so
// a bad job is an error value for the caller, not a database error halfway through a batch.
std::optional<std::string> check_new_job(const new_job& job);

// A job's identity: the tenant leads every key (DESIGN.md §4).
struct job_ref {
  core::uuid tenant;
  std::int64_t id = 0;
  friend bool operator==(const job_ref&, const job_ref&) = default;
};

// A claimed job, leased to its claimer.
struct job {
  job_ref ref;
  std::string kind;
  std::string payload_json;
  std::int16_t priority = 0;
  std::uint32_t attempt = 0;  // 1 on the first run
  std::uint32_t attempts_max = 0;
  // The previous attempt ended in doubt: before doing anything, look the effect up by its
  // idempotency key; it may have committed.
  bool in_doubt = false;
  std::optional<core::uuid> connection;
};

// A handler's verdict (STYLE.md §3). Every failure has one meaning for the queue.
enum class outcome_kind {
  done,               // finished; the job succeeds
  retry,              // transient failure; runs again after `retry_after`, or after backoff when zero
  needs_user_action,  // cannot succeed until a person acts (re-link a bank); dead until `jobs retry`
  failed_permanently, // can never succeed (malformed payload, invariant violated); dead
  in_doubt,           // the effect may have committed; runs again flagged in_doubt to reconcile by
                      // its idempotency key, never blindly
};

struct outcome {
  outcome_kind kind = outcome_kind::done;
  std::chrono::milliseconds retry_after{0};
  std::string error;  // redacted by the queue before it is stored

  static outcome done() { return {}; }
  static outcome retry(std::string error, std::chrono::milliseconds after = std::chrono::milliseconds{0}) {
    return {outcome_kind::retry, after, std::move(error)};
  }
  static outcome needs_user_action(std::string error) {
    return {outcome_kind::needs_user_action, {}, std::move(error)};
  }
  static outcome failed_permanently(std::string error) {
    return {outcome_kind::failed_permanently, {}, std::move(error)};
  }
  static outcome in_doubt(std::string error) { return {outcome_kind::in_doubt, {}, std::move(error)}; }
};

struct completion {
  job_ref ref;
  std::uint32_t attempt = 0;  // the attempt that ended, for the backoff
  outcome result;
};

}  // namespace bankworker::queue
