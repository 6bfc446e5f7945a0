#pragma once
// Periodic tasks shared by every process on one database (bankworker.schedules, migration 0007):
// a task's run for a period is claimed by one process, and a failed run can be brought forward.
// Also the queue-depth reading the scheduler publishes. The scheduler that decides when to ask is
// the runtime's (worker/scheduler.hpp).
//
// `now` is the injected clock's time as timestamptz text (tests), or empty for the database clock.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <pqxx/pqxx>

namespace bankworker::queue {

// Claims this period's run of `task` (committed by the caller on its own, so the claim is the
// record that the run is ours); false when another process ran it within `interval`.
bool claim_schedule(pqxx::work& tx, std::string_view task, std::chrono::milliseconds interval,
                    const std::optional<std::string>& now);

// Lets a failed task run again `retry_delay` from now instead of a whole interval later.
void defer_schedule(pqxx::work& tx, std::string_view task, std::chrono::milliseconds retry_delay,
                    const std::optional<std::string>& now);

// Jobs due now by kind and priority with the oldest one's wait, at most `series_max` rows.
pqxx::result read_queue_depth(pqxx::read_transaction& tx, const std::optional<std::string>& now, int series_max);

}  // namespace bankworker::queue
