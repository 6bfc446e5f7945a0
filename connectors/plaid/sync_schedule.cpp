// Periodic Plaid syncs (connectors/plaid/sync_schedule.hpp).

#include "connectors/plaid/sync_schedule.hpp"

#include <stdexcept>

#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "db/statement.hpp"

namespace bankworker::plaid {

namespace {

// $1 is the injected time as timestamptz text, or NULL for the database clock.
constexpr db::statement schedule_syncs_sql{"plaid_schedule_due_syncs",
    "SELECT connections, jobs FROM bankworker.schedule_due_syncs($1::timestamptz, $2::bigint, $3::bigint,"
    " $4::bigint, $5::integer)"};

template <class Value>
void check_range(const char* name, Value value, Value low, Value high) {
  if (value < low || value > high) throw std::invalid_argument(std::string("sync schedule ") + name + " out of range");
}

}  // namespace

void check_sync_schedule_settings(const sync_schedule_settings& s) {
  check_range("sync_interval", s.sync_interval, sync_interval_min, sync_interval_max);
  check_range("sync_jitter_percent", s.sync_jitter_percent, 0U, sync_jitter_percent_max);
  check_range("sync_batch", s.sync_batch, 1U, sync_batch_max);
  check_range("sync_batches_per_tick", s.sync_batches_per_tick, 1U, sync_batches_per_tick_max);
}

sync_schedule::sync_schedule(db::pool& connections, service::logger& log, sync_schedule_settings settings)
    : connections_(connections), log_(log), settings_(settings) {
  check_sync_schedule_settings(settings_);
  std::uint64_t seed = settings_.seed;
  if (seed == 0) seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  random_.seed(seed);
  log_.debug("sync schedule seeded", {{"seed", seed}});
}

sync_schedule_report sync_schedule::run(const std::optional<std::string>& now) {
  sync_schedule_report report;
  const std::int64_t interval_ms = settings_.sync_interval.count();
  const std::int64_t jitter_ms = interval_ms * settings_.sync_jitter_percent / 100;
  for (std::uint32_t i = 0; i < settings_.sync_batches_per_tick; ++i) {
    // Each statement gets its own jitter seed, so one seed does not fix every connection's
    // offset for ever: a connection lands on a different point of the window each period.
    const auto seed = static_cast<std::int64_t>(random_() >> 1);
    db::pool::lease lease = connections_.checkout();
    pqxx::work tx(lease.connection(), "bankworker_schedule_syncs");
    const pqxx::row row = db::exec_statement1(tx, schedule_syncs_sql, now ? now->c_str() : nullptr, interval_ms, jitter_ms,
                                          seed, static_cast<int>(settings_.sync_batch));
    lease.commit(tx);
    const auto picked = row[0].as<std::size_t>();
    BW_INVARIANT(picked <= settings_.sync_batch);
    report.connections_scheduled += picked;
    report.sync_jobs_enqueued += row[1].as<std::size_t>();
    report.backlog = picked == settings_.sync_batch;
    if (!report.backlog) break;
  }
  if (report.connections_scheduled > 0) {
    log_.info("scheduled periodic syncs",
              {{"connections", report.connections_scheduled}, {"jobs", report.sync_jobs_enqueued}});
  }
  return report;
}

}  // namespace bankworker::plaid
