#pragma once
// Periodic Plaid syncs: on every scheduler tick, the active connections whose next_sync_at has
// come get one plaid.sync job each, and their next_sync_at moves sync_interval plus a jitter of up
// to sync_jitter_percent ahead, in the same transaction (bankworker.schedule_due_syncs). Due rows
// are claimed FOR UPDATE SKIP LOCKED, so concurrent schedulers take disjoint connections. Runs as
// a service::scheduled_task of interval zero.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

#include "db/pool.hpp"
#include "service/log.hpp"

namespace bankworker::plaid {

inline constexpr std::chrono::milliseconds sync_interval_min{60'000};
inline constexpr std::chrono::milliseconds sync_interval_max{7 * 24 * 3'600'000LL};
inline constexpr std::uint32_t sync_jitter_percent_max = 50;
inline constexpr std::uint32_t sync_batch_max = 10'000;  // schedule_due_syncs refuses more
inline constexpr std::uint32_t sync_batches_per_tick_max = 100;

struct sync_schedule_settings {
  // Periodic sync: every sync_interval plus a jitter of up to sync_jitter_percent of it.
  std::chrono::milliseconds sync_interval{6 * 3'600'000LL};
  std::uint32_t sync_jitter_percent = 10;
  // Connections scheduled per statement, and statements per tick (a backlog is worked off over
  // several ticks; the next tick comes at once while the last one was full).
  std::uint32_t sync_batch = 500;
  std::uint32_t sync_batches_per_tick = 20;
  // Seeds the jitter; 0 draws a random seed. Logged at start so a run can be reproduced.
  std::uint64_t seed = 0;
};

// Throws std::invalid_argument naming the first setting out of its bounds.
void check_sync_schedule_settings(const sync_schedule_settings& settings);

struct sync_schedule_report {
  std::size_t connections_scheduled = 0;
  std::size_t sync_jobs_enqueued = 0;
  bool backlog = false;  // the last statement was full: more are due at once
};

class sync_schedule {
 public:
  // `connections` and `log` outlive the schedule.
  sync_schedule(db::pool& connections, service::logger& log, sync_schedule_settings settings = {});

  // One tick's scheduling, blocking. `now`: the injected clock as timestamptz text, or empty.
  // Throws on a database failure: the connections stay due and the next tick takes them.
  sync_schedule_report run(const std::optional<std::string>& now);

 private:
  db::pool& connections_;
  service::logger& log_;
  const sync_schedule_settings settings_;
  std::mt19937_64 random_;
};

}  // namespace bankworker::plaid
