#include "queue/worker_processes.hpp"

#include <stdexcept>

#include "core/assert.hpp"
#include "db/statement.hpp"

namespace bankworker::queue {

namespace {

// Each statement is one call of a function from 0042_worker_processes.sql.
constexpr db::statement beat_sql{"bw_worker_process_beat",
    "SELECT bankworker.beat_worker_process($1::uuid, $2::text, $3::integer, $4::text, $5::integer, $6::timestamptz)"};
constexpr db::statement stop_sql{"bw_worker_process_stop",
    "SELECT bankworker.stop_worker_process($1::uuid, $2::timestamptz)"};
constexpr db::statement list_sql{"bw_worker_process_list",
    "SELECT process_id, hostname, os_pid, version, started_at, last_heartbeat_at, stopped_at, heartbeat_age_s, state"
    " FROM bankworker.worker_processes($1::integer, $2::timestamptz)"};

// Cut to `bytes_max` at a UTF-8 character boundary.
std::string cut(std::string text, std::size_t bytes_max) {
  if (text.size() <= bytes_max) return text;
  std::size_t end = bytes_max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  text.resize(end);
  return text;
}

const char* or_null(const std::optional<std::string>& text) { return text ? text->c_str() : nullptr; }

worker_process_identity checked(worker_process_identity identity) {
  if (identity.heartbeat_interval < worker_heartbeat_interval_min ||
      identity.heartbeat_interval > worker_heartbeat_interval_max) {
    throw std::invalid_argument("worker_process_identity.heartbeat_interval is outside its bounds");
  }
  if (identity.pid <= 0) throw std::invalid_argument("worker_process_identity.pid must be positive");
  identity.hostname = cut(std::move(identity.hostname), worker_hostname_bytes_max);
  if (identity.hostname.empty()) identity.hostname = "unknown";
  identity.version = cut(std::move(identity.version), worker_version_bytes_max);
  return identity;
}

}  // namespace

worker_process_record::worker_process_record(db::pool& connections, worker_process_identity identity,
                                             clock_function clock)
    : connections_(connections), identity_(checked(std::move(identity))), clock_(std::move(clock)) {}

std::optional<std::string> worker_process_record::now_text() const {
  if (!clock_) return std::nullopt;
  return timestamp_text(clock_());
}

void worker_process_record::beat() {
  const std::optional<std::string> now = now_text();
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_worker_process_beat");
  db::exec_statement(tx, beat_sql, identity_.id.to_string(), identity_.hostname, identity_.pid, identity_.version,
                     static_cast<std::int32_t>(identity_.heartbeat_interval.count()), or_null(now));
  lease.commit(tx);
}

bool worker_process_record::stop() {
  const std::optional<std::string> now = now_text();
  db::pool::lease lease = connections_.checkout();
  const db::commit_watch::ticket deadline = lease.watch_autocommit();
  pqxx::nontransaction tx(lease.connection(), "bankworker_worker_process_stop");
  const pqxx::row row = db::exec_statement1(tx, stop_sql, identity_.id.to_string(), or_null(now));
  lease.commit(tx);
  return row[0].as<bool>();
}

std::vector<worker_process_row> list_worker_processes(pqxx::transaction_base& tx, std::size_t limit,
                                                      std::optional<time_point> now) {
  BW_ASSERT(limit >= 1);
  BW_ASSERT(limit <= worker_processes_shown_max);
  const std::optional<std::string> now_at = now ? std::optional<std::string>(timestamp_text(*now)) : std::nullopt;
  std::vector<worker_process_row> processes;
  for (const pqxx::row& row : db::exec_statement(tx, list_sql, static_cast<std::int32_t>(limit), or_null(now_at))) {
    worker_process_row process;
    process.process_id = row[0].c_str();
    process.hostname = row[1].c_str();
    process.pid = row[2].as<std::int32_t>();
    process.version = row[3].c_str();
    process.started_at = row[4].c_str();
    process.last_heartbeat_at = row[5].c_str();
    if (!row[6].is_null()) process.stopped_at = row[6].c_str();
    process.heartbeat_age_s = row[7].as<std::int64_t>();
    process.state = row[8].c_str();
    processes.push_back(std::move(process));
  }
  return processes;
}

}  // namespace bankworker::queue
