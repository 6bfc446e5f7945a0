#pragma once
// The `bankworker run` processes and their heartbeats (bankworker.worker_processes, migration
// 0042): each process registers at start, beats from the database gauges' refresh loop, and marks
// itself stopped on a graceful shutdown; the operator console lists them and the gauges count them
// by state. Beside the queue because a process's id is its lease owner id, the worker every
// failed attempt names.
//
// The worker reaches the table only through SECURITY DEFINER functions (see the migration), each
// one prepared statement here; beat and stop run in autocommit, one round trip each.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/pool.hpp"
#include "queue/queue.hpp"

namespace bankworker::queue {

inline constexpr std::chrono::milliseconds worker_heartbeat_interval_min{100};
inline constexpr std::chrono::milliseconds worker_heartbeat_interval_max{3'600'000};
// The table's limits on the texts a process gives; longer ones are cut.
inline constexpr std::size_t worker_hostname_bytes_max = 255;
inline constexpr std::size_t worker_version_bytes_max = 64;
// worker_processes() returns at most this many rows.
inline constexpr std::size_t worker_processes_shown_max = 1000;

// Who a process is. The interval is stored with its row: the process counts as alive while its
// last beat is at most three intervals old, whatever interval the other processes use.
struct worker_process_identity {
  core::uuid id;          // the dispatcher's lease owner id (logged at start as worker_id)
  std::string hostname;   // empty: "unknown"
  std::int32_t pid = 0;   // > 0
  std::string version;
  std::chrono::milliseconds heartbeat_interval{15'000};
};

// One process as the console shows it. Timestamps as PostgreSQL prints timestamptz.
struct worker_process_row {
  std::string process_id;
  std::string hostname;
  std::int32_t pid = 0;
  std::string version;
  std::string started_at;
  std::string last_heartbeat_at;
  std::optional<std::string> stopped_at;
  std::int64_t heartbeat_age_s = 0;
  std::string state;  // alive, silent or stopped
};

// This process's row. `connections` outlives it.
class worker_process_record {
 public:
  // Throws std::invalid_argument when the interval is outside its bounds or the pid is not positive.
  // `clock`: empty in production (the database's clock); tests inject one.
  worker_process_record(db::pool& connections, worker_process_identity identity, clock_function clock = {});

  // Registers the process (the first call) or records a heartbeat, then prunes rows stopped or
  // silent for a day. Throws what the pool and libpqxx throw when the database cannot be reached.
  void beat();
  // Marks the process stopped; true when it had a running row (false on a second call).
  bool stop();

  const worker_process_identity& identity() const noexcept { return identity_; }

 private:
  std::optional<std::string> now_text() const;

  db::pool& connections_;
  const worker_process_identity identity_;
  const clock_function clock_;
};

// Every process: live ones first, then by host and start; at most `limit` (1..worker_processes_shown_max).
// `now` decides the states and ages (empty: the database's clock).
std::vector<worker_process_row> list_worker_processes(pqxx::transaction_base& tx, std::size_t limit,
                                                      std::optional<time_point> now = std::nullopt);

// Processes by state for the gauges: rows (state text, processes bigint), at most three. No
// parameters, so it goes in the gauges' one pipelined round trip.
inline constexpr const char* worker_process_gauges_sql =
    "SELECT state, count(*) FROM bankworker.worker_processes(1000, NULL) GROUP BY state";
// The states, in the order the console and the gauge name them.
inline constexpr std::string_view worker_process_states[] = {"alive", "silent", "stopped"};

}  // namespace bankworker::queue
