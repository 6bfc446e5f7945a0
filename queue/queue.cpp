#include "queue/queue.hpp"

#include <sodium.h>

#include <algorithm>
#include <ctime>

#include "core/assert.hpp"
#include "core/limits.hpp"
#include "crypto/redact.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::queue {

namespace {

// Each statement is one call of a function from 0003_jobs.sql (or a later migration's version).
constexpr db::statement enqueue_sql{"bw_queue_enqueue",
    "SELECT job_id FROM bankworker.enqueue_jobs($1::uuid[], $2::text[], $3::jsonb[], $4::smallint[],"
    " $5::timestamptz[], $6::text[], $7::uuid[], $8::integer[])"};
constexpr db::statement claim_sql{"bw_queue_claim",
    "SELECT tenant_id, job_id, kind, payload, priority, attempt, attempts_max, in_doubt, connection_id"
    " FROM bankworker.claim_jobs($1::uuid, $2::integer, $3::integer, $4::timestamptz, $5::text[])"};
constexpr db::statement extend_sql{"bw_queue_extend",
    "SELECT tenant_id, job_id FROM bankworker.extend_job_leases($1::uuid, $2::uuid[], $3::bigint[], $4::integer,"
    " $5::timestamptz)"};
constexpr db::statement complete_sql{"bw_queue_complete",
    "SELECT tenant_id, job_id, state FROM bankworker.complete_jobs($1::uuid, $2::uuid[], $3::bigint[], $4::text[],"
    " $5::bigint[], $6::text[], $7::timestamptz)"};
constexpr db::statement rescue_sql{"bw_queue_rescue",
    "SELECT bankworker.rescue_expired_jobs($1::integer, $2::timestamptz)"};
constexpr db::statement release_sql{"bw_queue_release",
    "SELECT bankworker.release_jobs($1::uuid, $2::uuid[], $3::bigint[])"};
constexpr db::statement release_unknown_sql{"bw_queue_release_unknown",
    "SELECT bankworker.release_unknown_jobs($1::uuid, $2::uuid[], $3::bigint[])"};
constexpr db::statement cancel_sql{"bw_queue_cancel",
    "SELECT state, changed FROM bankworker.cancel_job($1::bigint)"};
constexpr db::statement cancel_connection_sql{"bw_queue_cancel_connection",
    "SELECT bankworker.cancel_connection_jobs($1::uuid, $2::uuid, $3::bigint)"};
constexpr db::statement retry_sql{"bw_queue_retry",
    "SELECT state, changed FROM bankworker.retry_job($1::bigint)"};
constexpr db::statement prune_sql{"bw_queue_prune",
    "SELECT bankworker.prune_jobs(now() - $1::bigint * interval '1 hour', now() - $2::bigint * interval '1 hour',"
    " $3::integer)"};
constexpr db::statement list_sql{"bw_queue_list",
    "SELECT job_id, tenant_id, kind, state, priority, attempt, attempts_max, run_at, created_at, finished_at,"
    " failure, last_error FROM bankworker.list_jobs($1::text, $2::text, $3::uuid, $4::integer)"};
constexpr db::statement details_sql{"bw_queue_details",
    "SELECT job_id, tenant_id, kind, state, priority, attempt, attempts_max, run_at, created_at, finished_at,"
    " failure, last_error, started_at, in_doubt, connection_id, unique_key, payload"
    " FROM bankworker.job_details($1::bigint)"};
constexpr db::statement attempts_sql{"bw_queue_attempts",
    "SELECT attempt, outcome, error, worker, started_at, finished_at FROM bankworker.job_attempts($1::uuid, $2::bigint)"};
constexpr db::statement change_many_sql{"bw_queue_change_many",
    "SELECT job_id, tenant_id, kind, state, changed"
    " FROM bankworker.change_jobs($1::boolean, $2::text, $3::text, $4::uuid, $5::integer, $6::boolean)"};

using db::array_text;

bool valid_kind(std::string_view kind) noexcept {
  if (kind.empty() || kind.size() > limits::job_kind_bytes_max) return false;
  bool segment_start = true;
  for (const char c : kind) {
    if (segment_start) {
      if (c < 'a' || c > 'z') return false;
      segment_start = false;
    } else if (c == '.') {
      segment_start = true;
    } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return false;
    }
  }
  return !segment_start;
}

// Redacted and cut to job_error_bytes_max at a character boundary: the stored error is read by
// operators and must never carry a token that a provider echoed back.
std::string stored_error(std::string_view error) {
  std::string text = crypto::redact(error);
  if (text.size() > limits::job_error_bytes_max) {
    std::size_t cut = limits::job_error_bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
  }
  return text;
}

std::string_view outcome_text(outcome_kind kind) noexcept {
  switch (kind) {
    case outcome_kind::done: return "done";
    case outcome_kind::retry: return "retry";
    case outcome_kind::needs_user_action: return "needs_user_action";
    case outcome_kind::failed_permanently: return "permanent";
    case outcome_kind::in_doubt: return "in_doubt";
  }
  return "permanent";
}

job_state state_of(const pqxx::field& field) {
  const std::optional<job_state> state = parse_job_state(field.c_str());
  BW_INVARIANT(state.has_value());
  return *state;
}

core::uuid uuid_of(const pqxx::field& field) {
  const std::optional<core::uuid> id = core::uuid::parse(field.c_str());
  BW_INVARIANT(id.has_value());
  return *id;
}

std::optional<std::string> optional_text(const pqxx::field& field) {
  if (field.is_null()) return std::nullopt;
  return std::string(field.c_str());
}

// The first twelve columns of list_jobs and job_details, which return them in the same order.
job_summary summary_of(const pqxx::row& row) {
  job_summary summary;
  summary.id = row[0].as<std::int64_t>();
  summary.tenant = uuid_of(row[1]);
  summary.kind = row[2].c_str();
  summary.state = state_of(row[3]);
  summary.priority = row[4].as<std::int16_t>();
  summary.attempt = row[5].as<std::uint32_t>();
  summary.attempts_max = row[6].as<std::uint32_t>();
  summary.run_at = row[7].c_str();
  summary.created_at = row[8].c_str();
  summary.finished_at = optional_text(row[9]);
  summary.failure = optional_text(row[10]);
  summary.last_error = optional_text(row[11]);
  return summary;
}

const char* or_null(const std::optional<std::string>& text) { return text ? text->c_str() : nullptr; }

// cancel() and retry(): one function call on one job in a statement of its own; the job's state
// afterwards and whether the call changed it, or nothing when there is no such job.
std::optional<job_change> change_one_job(db::pool& connections, const db::statement& sql, const char* name,
                                         std::int64_t job_id) {
  db::pool::lease lease = connections.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), name);
  const pqxx::result rows = db::exec_statement(tx, sql, job_id);
  lease.commit(tx);
  if (rows.empty()) return std::nullopt;
  return job_change{state_of(rows[0][0]), rows[0][1].as<bool>()};
}

void refs_to_arrays(std::span<const job_ref> jobs, array_text& tenants, array_text& ids) {
  for (const job_ref& ref : jobs) {
    tenants.add(ref.tenant.to_string());
    ids.add(std::to_string(ref.id));
  }
}

}  // namespace

std::string_view to_string(job_state state) noexcept {
  switch (state) {
    case job_state::available: return "available";
    case job_state::running: return "running";
    case job_state::retryable: return "retryable";
    case job_state::succeeded: return "succeeded";
    case job_state::failed: return "failed";
    case job_state::cancelled: return "cancelled";
  }
  return "failed";
}

std::optional<job_state> parse_job_state(std::string_view text) noexcept {
  for (const job_state state : {job_state::available, job_state::running, job_state::retryable,
                                job_state::succeeded, job_state::failed, job_state::cancelled}) {
    if (to_string(state) == text) return state;
  }
  return std::nullopt;
}

std::optional<job_state> parse_job_state_name(std::string_view text) noexcept {
  if (text == "dead") return job_state::failed;
  if (text == "retried") return job_state::retryable;
  return parse_job_state(text);
}

std::optional<std::string> check_new_job(const new_job& job) {
  if (!valid_kind(job.kind)) {
    return "job kind must be dot-separated [a-z][a-z0-9_]* words of at most job_kind_bytes_max (" +
           std::to_string(limits::job_kind_bytes_max) + ") bytes";
  }
  if (job.payload_json.size() > limits::job_payload_bytes_max) {
    return "job payload is larger than job_payload_bytes_max (" + std::to_string(limits::job_payload_bytes_max) +
           " bytes)";
  }
  if (job.payload_json.empty() || job.payload_json.front() != '{') return "job payload must be a JSON object";
  if (job.priority < 0 || job.priority > 1000) return "job priority must be 0..1000";
  if (job.attempts_max < 1 || job.attempts_max > limits::job_attempts_max) {
    return "job attempts_max must be 1..job_attempts_max (" + std::to_string(limits::job_attempts_max) + ")";
  }
  if (job.unique_key && (job.unique_key->empty() || job.unique_key->size() > limits::job_unique_key_bytes_max)) {
    return "job unique key must be 1..job_unique_key_bytes_max bytes";
  }
  return std::nullopt;
}

std::string timestamp_text(time_point at) {
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count();
  std::int64_t seconds = micros / 1'000'000;
  std::int64_t fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    seconds -= 1;
  }
  const std::time_t whole = static_cast<std::time_t>(seconds);
  std::tm utc{};
  ::gmtime_r(&whole, &utc);
  char text[64];
  const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &utc);
  BW_ASSERT(length > 0);
  char micro_text[16];
  std::snprintf(micro_text, sizeof micro_text, ".%06lld+00", static_cast<long long>(fraction));
  return std::string(text, length) + micro_text;
}

std::vector<std::int64_t> enqueue(pqxx::transaction_base& tx, std::span<const new_job> jobs) {
  for (const new_job& job : jobs) {
    if (auto why = check_new_job(job)) throw job_rejected(*why);
  }
  std::vector<std::int64_t> ids;
  ids.reserve(jobs.size());
  for (std::size_t start = 0; start < jobs.size(); start += limits::job_batch_max) {
    const std::span<const new_job> chunk = jobs.subspan(start, std::min(limits::job_batch_max, jobs.size() - start));
    array_text tenants, kinds, payloads, priorities, run_ats, unique_keys, connections, attempts;
    for (const new_job& job : chunk) {
      tenants.add(job.tenant.to_string());
      kinds.add(job.kind);
      payloads.add(job.payload_json);
      priorities.add(std::to_string(job.priority));
      run_ats.add(job.run_at ? std::optional<std::string_view>(timestamp_text(*job.run_at)) : std::nullopt);
      unique_keys.add(job.unique_key ? std::optional<std::string_view>(*job.unique_key) : std::nullopt);
      connections.add(job.connection ? std::optional<std::string_view>(job.connection->to_string()) : std::nullopt);
      attempts.add(std::to_string(job.attempts_max));
    }
    const pqxx::result rows =
        db::exec_statement(tx, enqueue_sql, tenants.finish(), kinds.finish(), payloads.finish(), priorities.finish(),
                           run_ats.finish(), unique_keys.finish(), connections.finish(), attempts.finish());
    for (const auto& row : rows) ids.push_back(row[0].as<std::int64_t>());
  }
  return ids;
}

job_queue::job_queue(db::pool& connections, queue_settings settings)
    : connections_(connections), settings_(std::move(settings)) {
  if (settings_.lease < limits::job_lease_min || settings_.lease > limits::job_lease_max) {
    throw queue_settings_error("queue lease must be within job_lease_min..job_lease_max");
  }
  if (settings_.backoff.base.count() <= 0 || settings_.backoff.cap < settings_.backoff.base ||
      settings_.backoff.cap > limits::job_backoff_max) {
    throw queue_settings_error("queue backoff must have 0 < base <= cap <= job_backoff_max");
  }
  seed_ = settings_.seed;
  if (seed_ == 0) randombytes_buf(&seed_, sizeof seed_);
  random_.seed(seed_);
}

std::optional<std::string> job_queue::now_text() const {
  if (!settings_.clock) return std::nullopt;
  return timestamp_text(settings_.clock());
}

std::vector<std::int64_t> job_queue::enqueue(std::span<const new_job> jobs) {
  db::pool::lease lease = connections_.checkout();
  // Up to job_batch_max jobs are one statement, which is atomic on its own: autocommit saves the
  // BEGIN and COMMIT round trips, a tenth of a millisecond each on the enqueue-to-start path.
  // More jobs take several statements, which must commit together.
  if (jobs.size() <= limits::job_batch_max) {
    const db::commit_watch::ticket deadline = lease.watch_autocommit();
    pqxx::nontransaction tx(lease.connection(), "bankworker_enqueue");
    std::vector<std::int64_t> ids = queue::enqueue(tx, jobs);
    lease.commit(tx);
    return ids;
  }
  pqxx::work tx(lease.connection(), "bankworker_enqueue");
  std::vector<std::int64_t> ids = queue::enqueue(tx, jobs);
  lease.commit(tx);
  return ids;
}

// The machinery's operations are one statement each, so they run in autocommit (a nontransaction):
// one round trip instead of three (BEGIN, the call, COMMIT), which is most of a claim's latency at idle.
std::vector<job> job_queue::claim(const core::uuid& owner, std::size_t limit, std::span<const std::string> skip_kinds) {
  BW_ASSERT(limit >= 1);
  BW_ASSERT(limit <= limits::job_batch_max);
  const std::optional<std::string> now = now_text();
  std::optional<std::string> skip;
  if (!skip_kinds.empty()) {
    array_text kinds;
    for (const std::string& kind : skip_kinds) kinds.add(kind);
    skip = kinds.finish();
  }
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_claim");
  const pqxx::result rows = db::exec_statement(tx, claim_sql, owner.to_string(), static_cast<int>(limit),
                                               static_cast<int>(settings_.lease.count()), or_null(now), or_null(skip));
  lease.commit(tx);
  std::vector<job> jobs;
  jobs.reserve(rows.size());
  for (const auto& row : rows) {
    job claimed;
    claimed.ref = {uuid_of(row[0]), row[1].as<std::int64_t>()};
    claimed.kind = row[2].c_str();
    claimed.payload_json = row[3].c_str();
    claimed.priority = row[4].as<std::int16_t>();
    claimed.attempt = row[5].as<std::uint32_t>();
    claimed.attempts_max = row[6].as<std::uint32_t>();
    claimed.in_doubt = row[7].as<bool>();
    if (!row[8].is_null()) claimed.connection = uuid_of(row[8]);
    BW_INVARIANT(claimed.attempt >= 1);
    jobs.push_back(std::move(claimed));
  }
  BW_INVARIANT(jobs.size() <= limit);
  return jobs;
}

std::vector<job_ref> job_queue::extend_leases(const core::uuid& owner, std::span<const job_ref> jobs) {
  std::vector<job_ref> held;
  if (jobs.empty()) return held;
  BW_ASSERT(jobs.size() <= limits::job_batch_max);
  array_text tenants, ids;
  refs_to_arrays(jobs, tenants, ids);
  const std::optional<std::string> now = now_text();
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_heartbeat");
  const pqxx::result rows = db::exec_statement(tx, extend_sql, owner.to_string(), tenants.finish(), ids.finish(),
                                               static_cast<int>(settings_.lease.count()), or_null(now));
  lease.commit(tx);
  for (const auto& row : rows) held.push_back({uuid_of(row[0]), row[1].as<std::int64_t>()});
  return held;
}

std::chrono::milliseconds job_queue::retry_delay(const completion& outcome) {
  if (outcome.result.retry_after.count() > 0) {
    return std::min(outcome.result.retry_after, std::chrono::milliseconds(limits::job_backoff_max));
  }
  std::lock_guard lock(random_mutex_);
  return backoff_delay(outcome.attempt, settings_.backoff, random_);
}

namespace {

pqxx::result run_complete(pqxx::transaction_base& tx, job_queue& queue, const core::uuid& owner,
                          std::span<const completion> outcomes, const std::optional<std::string>& now) {
  array_text tenants, ids, kinds, delays, errors;
  for (const completion& outcome : outcomes) {
    tenants.add(outcome.ref.tenant.to_string());
    ids.add(std::to_string(outcome.ref.id));
    kinds.add(outcome_text(outcome.result.kind));
    const bool retries = outcome.result.kind == outcome_kind::retry || outcome.result.kind == outcome_kind::in_doubt;
    delays.add(std::to_string(retries ? queue.retry_delay(outcome).count() : 0));
    if (outcome.result.kind == outcome_kind::done) {
      errors.add(std::nullopt);
    } else {
      errors.add(stored_error(outcome.result.error));
    }
  }
  return db::exec_statement(tx, complete_sql, owner.to_string(), tenants.finish(), ids.finish(), kinds.finish(),
                            delays.finish(), errors.finish(), or_null(now));
}

}  // namespace

std::vector<completed> job_queue::complete(const core::uuid& owner, std::span<const completion> outcomes) {
  if (outcomes.empty()) return {};
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_complete");
  std::vector<completed> result = complete_in(tx, owner, outcomes);
  lease.commit(tx);
  return result;
}

std::optional<job_state> job_queue::complete_in(pqxx::transaction_base& tx, const core::uuid& owner,
                                                const completion& outcome) {
  const std::vector<completed> rows = complete_in(tx, owner, std::span(&outcome, 1));
  if (rows.empty()) return std::nullopt;
  BW_INVARIANT(rows.size() == 1);
  return rows[0].state;
}

std::vector<completed> job_queue::complete_in(pqxx::transaction_base& tx, const core::uuid& owner,
                                             std::span<const completion> outcomes) {
  std::vector<completed> result;
  if (outcomes.empty()) return result;
  BW_ASSERT(outcomes.size() <= limits::job_batch_max);
  for (const auto& row : run_complete(tx, *this, owner, outcomes, now_text())) {
    result.push_back({{uuid_of(row[0]), row[1].as<std::int64_t>()}, state_of(row[2])});
  }
  return result;
}

std::size_t job_queue::rescue_expired(std::size_t limit) {
  BW_ASSERT(limit >= 1);
  BW_ASSERT(limit <= limits::job_batch_max);
  const std::optional<std::string> now = now_text();
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_rescue");
  const pqxx::row row = db::exec_statement1(tx, rescue_sql, static_cast<int>(limit), or_null(now));
  lease.commit(tx);
  return row[0].as<std::size_t>();
}

std::size_t job_queue::release(const core::uuid& owner, std::span<const job_ref> jobs) {
  if (jobs.empty()) return 0;
  BW_ASSERT(jobs.size() <= limits::job_batch_max);
  array_text tenants, ids;
  refs_to_arrays(jobs, tenants, ids);
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_release");
  const pqxx::row row = db::exec_statement1(tx, release_sql, owner.to_string(), tenants.finish(), ids.finish());
  lease.commit(tx);
  return row[0].as<std::size_t>();
}

std::size_t job_queue::release_unknown(const core::uuid& owner, std::span<const job_ref> held) {
  BW_ASSERT(held.size() <= limits::job_batch_max);
  array_text tenants, ids;
  refs_to_arrays(held, tenants, ids);
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_release_unknown");
  const pqxx::row row = db::exec_statement1(tx, release_unknown_sql, owner.to_string(), tenants.finish(), ids.finish());
  lease.commit(tx);
  return row[0].as<std::size_t>();
}

std::optional<job_change> job_queue::cancel(std::int64_t job_id) {
  return change_one_job(connections_, cancel_sql, "bankworker_cancel", job_id);
}

std::size_t job_queue::cancel_connection(pqxx::transaction_base& tx, const core::uuid& tenant,
                                         const core::uuid& connection, std::optional<std::int64_t> except_job) {
  const std::optional<std::string> except = except_job ? std::optional(std::to_string(*except_job)) : std::nullopt;
  const pqxx::row row = db::exec_statement1(tx, cancel_connection_sql, tenant.to_string(), connection.to_string(),
                                            or_null(except));
  return row[0].as<std::size_t>();
}

std::optional<job_change> job_queue::retry(std::int64_t job_id) {
  return change_one_job(connections_, retry_sql, "bankworker_retry", job_id);
}

std::size_t job_queue::prune(std::chrono::hours done_retention, std::chrono::hours dead_retention, std::size_t batch,
                             std::size_t batches) {
  BW_ASSERT(batch >= 1);
  BW_ASSERT(batch <= limits::job_prune_batch_max);
  std::size_t pruned = 0;
  for (std::size_t i = 0; i < batches; ++i) {
    db::pool::lease lease = connections_.checkout();
    const db::commit_watch::ticket deadline = lease.watch_autocommit();
    pqxx::nontransaction tx(lease.connection(), "bankworker_prune");
    const pqxx::row row = db::exec_statement1(tx, prune_sql, static_cast<std::int64_t>(done_retention.count()),
                                              static_cast<std::int64_t>(dead_retention.count()),
                                              static_cast<int>(batch));
    lease.commit(tx);
    const auto deleted = row[0].as<std::size_t>();
    pruned += deleted;
    if (deleted < batch) break;
  }
  return pruned;
}

std::vector<job_summary> job_queue::list(const list_filter& filter) {
  BW_ASSERT(filter.limit >= 1);
  BW_ASSERT(filter.limit <= limits::job_batch_max);
  const std::optional<std::string> state =
      filter.state ? std::optional<std::string>(std::string(to_string(*filter.state))) : std::nullopt;
  const std::optional<std::string> tenant =
      filter.tenant ? std::optional<std::string>(filter.tenant->to_string()) : std::nullopt;
  db::pool::lease lease = connections_.checkout();
  pqxx::nontransaction tx(lease.connection(), "bankworker_list");
  const pqxx::result rows = db::exec_statement(tx, list_sql, or_null(state), or_null(filter.kind), or_null(tenant),
                                               static_cast<int>(filter.limit));
  lease.commit(tx);
  std::vector<job_summary> jobs;
  jobs.reserve(rows.size());
  for (const auto& row : rows) {
    jobs.push_back(summary_of(row));
  }
  return jobs;
}

std::optional<job_details> job_queue::details(std::int64_t job_id) {
  db::pool::lease lease = connections_.checkout();
  // One snapshot for the job and its attempts.
  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(lease.connection(), "bankworker_details");
  const pqxx::result rows = db::exec_statement(tx, details_sql, job_id);
  if (rows.empty()) return std::nullopt;
  const pqxx::row row = rows[0];
  job_details details;
  details.summary = summary_of(row);
  details.started_at = optional_text(row[12]);
  details.in_doubt = row[13].as<bool>();
  details.connection = optional_text(row[14]);
  details.unique_key = optional_text(row[15]);
  details.payload = row[16].c_str();
  for (const auto& attempt : db::exec_statement(tx, attempts_sql, details.summary.tenant.to_string(), job_id)) {
    details.attempts.push_back({.attempt = attempt[0].as<std::uint32_t>(),
                                .outcome = attempt[1].c_str(),
                                .error = optional_text(attempt[2]),
                                .worker = optional_text(attempt[3]),
                                .started_at = optional_text(attempt[4]),
                                .finished_at = attempt[5].c_str()});
  }
  tx.commit();
  BW_INVARIANT(details.attempts.size() <= job_attempts_shown_max);
  return details;
}

std::vector<matched_job> job_queue::change_many(bool retry, const change_filter& filter) {
  BW_ASSERT(filter.limit >= 1);
  BW_ASSERT(filter.limit <= limits::job_batch_max);
  const std::optional<std::string> state =
      filter.state ? std::optional<std::string>(std::string(to_string(*filter.state))) : std::nullopt;
  const std::optional<std::string> tenant =
      filter.tenant ? std::optional<std::string>(filter.tenant->to_string()) : std::nullopt;
  db::pool::lease lease = connections_.checkout();
  pqxx::work tx(lease.connection(), "bankworker_change_many");
  const pqxx::result rows = db::exec_statement(tx, change_many_sql, retry, or_null(state), or_null(filter.kind),
                                               or_null(tenant), static_cast<int>(filter.limit), filter.dry_run);
  lease.commit(tx);
  std::vector<matched_job> matched;
  matched.reserve(rows.size());
  for (const auto& row : rows) {
    matched.push_back({.id = row[0].as<std::int64_t>(),
                       .tenant = uuid_of(row[1]),
                       .kind = row[2].c_str(),
                       .state = state_of(row[3]),
                       .changed = row[4].as<bool>()});
  }
  return matched;
}

}  // namespace bankworker::queue
