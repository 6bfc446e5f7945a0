// Claiming and deferring shared periodic tasks, and reading the queue depth (queue/schedules.hpp).

#include "queue/schedules.hpp"

namespace bankworker::queue {

namespace {

// $1 is the injected time as timestamptz text, or NULL for the database clock, in every statement.
constexpr const char* claim_schedule_sql = "SELECT bankworker.claim_schedule($2::text, $3::bigint, $1::timestamptz)";
constexpr const char* defer_schedule_sql = "SELECT bankworker.defer_schedule($2::text, $3::bigint, $1::timestamptz)";
constexpr const char* queue_depth_sql =
    "SELECT kind, priority, jobs, oldest_ms FROM bankworker.queue_depth($1::timestamptz, $2::integer)";

const char* null_or(const std::optional<std::string>& text) { return text ? text->c_str() : nullptr; }

}  // namespace

bool claim_schedule(pqxx::work& tx, std::string_view task, std::chrono::milliseconds interval,
                    const std::optional<std::string>& now) {
  return tx.exec_params1(claim_schedule_sql, null_or(now), std::string(task), interval.count())[0].as<bool>();
}

void defer_schedule(pqxx::work& tx, std::string_view task, std::chrono::milliseconds retry_delay,
                    const std::optional<std::string>& now) {
  tx.exec_params(defer_schedule_sql, null_or(now), std::string(task), retry_delay.count());
}

pqxx::result read_queue_depth(pqxx::read_transaction& tx, const std::optional<std::string>& now, int series_max) {
  return tx.exec_params(queue_depth_sql, null_or(now), series_max);
}

}  // namespace bankworker::queue
