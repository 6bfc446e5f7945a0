#include "worker/scheduler.hpp"

#include <stdexcept>

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "db/rate_limits.hpp"
#include "db/stripe_store.hpp"
#include "queue/run_blocking.hpp"

namespace bankworker::worker {

using service::logger;
using service::metric_labels;
using service::metrics_registry;

namespace {

// $1 is the injected time as timestamptz text, or NULL for the database clock, in every statement.
constexpr const char* schedule_syncs_sql =
    "SELECT connections, jobs FROM bankworker.schedule_due_syncs($1::timestamptz, $2::bigint, $3::bigint,"
    " $4::bigint, $5::integer)";
constexpr const char* claim_schedule_sql = "SELECT bankworker.claim_schedule($2::text, $3::bigint, $1::timestamptz)";
constexpr const char* defer_schedule_sql = "SELECT bankworker.defer_schedule($2::text, $3::bigint, $1::timestamptz)";
constexpr const char* prune_external_calls_sql =
    "SELECT bankworker.prune_external_calls(coalesce($1::timestamptz, now()) - $2::bigint * interval '1 hour',"
    " $3::integer)";
constexpr const char* queue_depth_sql =
    "SELECT kind, priority, jobs, oldest_ms FROM bankworker.queue_depth($1::timestamptz, $2::integer)";
constexpr const char* revoking_connections_sql =
    "SELECT connections, oldest_s FROM bankworker.revoking_connections($1::timestamptz)";

const char* null_or(const std::optional<std::string>& text) { return text ? text->c_str() : nullptr; }

template <class Duration>
void check_range(const char* name, Duration value, Duration low, Duration high) {
  if (value < low || value > high) throw std::invalid_argument(std::string("scheduler ") + name + " out of range");
}

}  // namespace

void check_scheduler_settings(const scheduler_settings& s) {
  check_range("tick", s.tick, scheduler_tick_min, scheduler_tick_max);
  check_range("sync_interval", s.sync_interval, sync_interval_min, sync_interval_max);
  if (s.sync_jitter_percent > sync_jitter_percent_max) throw std::invalid_argument("scheduler sync_jitter_percent out of range");
  check_range("sync_batch", s.sync_batch, 1U, sync_batch_max);
  check_range("sync_batches_per_tick", s.sync_batches_per_tick, 1U, sync_batches_per_tick_max);
  check_range("prune_jobs_interval", s.prune_jobs_interval, maintenance_interval_min, maintenance_interval_max);
  check_range("prune_external_calls_interval", s.prune_external_calls_interval, maintenance_interval_min,
              maintenance_interval_max);
  check_range("prune_rate_buckets_interval", s.prune_rate_buckets_interval, maintenance_interval_min,
              maintenance_interval_max);
  check_range("stripe_recovery_interval", s.stripe_recovery_interval, maintenance_interval_min,
              maintenance_interval_max);
  if (s.stripe_recovery_tenants == 0 || s.stripe_recovery_tenants > stripe_recovery_tenants_max) {
    throw std::invalid_argument("stripe_recovery_tenants must be 1…stripe_recovery_tenants_max");
  }
  check_range("retry_delay", s.retry_delay, maintenance_interval_min, maintenance_interval_max);
  check_range("succeeded_retention", s.succeeded_retention, std::chrono::hours(0), std::chrono::hours(24 * 365));
  check_range("dead_retention", s.dead_retention, std::chrono::hours(0), std::chrono::hours(24 * 365));
  check_range("external_calls_retention", s.external_calls_retention, std::chrono::hours(0),
              std::chrono::hours(24 * 365));
  check_range("prune_batch", s.prune_batch, 1U, prune_batch_max);
  check_range("prune_batches_per_run", s.prune_batches_per_run, 1U, prune_batches_per_run_max);
}

scheduler::scheduler(boost::asio::io_context& io, boost::asio::thread_pool& blocking, db::pool& connections,
                     queue::job_queue& jobs, scheduler_settings settings, logger& log, metrics_registry* metrics)
    : blocking_(blocking),
      connections_(connections),
      jobs_(jobs),
      settings_(std::move(settings)),
      log_(log),
      metrics_(metrics),
      strand_(boost::asio::make_strand(io)),
      timer_(strand_) {
  check_scheduler_settings(settings_);
  std::uint64_t seed = settings_.seed;
  if (seed == 0) seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  random_.seed(seed);
  log_.debug("scheduler seeded", {{"seed", seed}});
  if (metrics_ != nullptr) {
    // A revocation waits in 'revoking', token sealed, until Plaid confirms the removal; the alert
    // in contrib/prometheus/alerts.yml fires on the age of the oldest one.
    metrics_->add_gauge("bankworker_plaid_connections_revoking",
                        "Connections waiting for Plaid to confirm /item/remove (token still sealed).", {},
                        [this] { return revoking_connections_.load(std::memory_order_relaxed); });
    metrics_->add_gauge("bankworker_plaid_revoking_oldest_age_seconds",
                        "Seconds since the oldest connection still revoking entered that state (0: none).", {},
                        [this] { return revoking_oldest_s_.load(std::memory_order_relaxed); });
  }
}

void scheduler::stop() {
  stopping_ = true;
  boost::asio::post(strand_, [this] { timer_.cancel(); });
}

boost::asio::awaitable<void> scheduler::run() {
  while (!stopping_) {
    bool backlog = false;
    try {
      const scheduler_report report = co_await queue::run_blocking(blocking_, [this] { return tick(); });
      backlog = report.sync_backlog;
      if (report.connections_scheduled > 0) {
        log_.info("scheduled periodic syncs",
                  {{"connections", report.connections_scheduled}, {"jobs", report.sync_jobs_enqueued}});
      }
    } catch (const std::exception& error) {
      // tick() handles each step's failure itself; this is the pool or the clock failing.
      log_.warn("scheduler tick failed; trying again next tick", {{"error", error.what()}});
    }
    if (stopping_) break;
    // A full last batch means more connections are due: go again after the shortest tick.
    timer_.expires_after(backlog ? scheduler_tick_min : settings_.tick);
    boost::system::error_code cancelled;
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, cancelled));
  }
}

std::optional<std::string> scheduler::now_text() const {
  if (!settings_.clock) return std::nullopt;
  return queue::timestamp_text(settings_.clock());
}

scheduler_report scheduler::tick() {
  scheduler_report report;
  const std::optional<std::string> now = now_text();
  schedule_syncs(report, now);
  run_task(prune_jobs_schedule, settings_.prune_jobs_interval, now, report, [&] {
    report.jobs_pruned += jobs_.prune(settings_.succeeded_retention, settings_.dead_retention,
                                      settings_.prune_batch, settings_.prune_batches_per_run);
  });
  run_task(prune_external_calls_schedule, settings_.prune_external_calls_interval, now, report,
           [&] { report.external_calls_pruned += prune_external_calls(now); });
  run_task(prune_rate_buckets_schedule, settings_.prune_rate_buckets_interval, now, report, [&] {
    // A bucket idle for twice its window holds nothing; the function keeps anything younger anyway.
    const auto before = (settings_.clock ? settings_.clock() : std::chrono::system_clock::now()) -
                        std::chrono::seconds(122);
    for (std::uint32_t i = 0; i < settings_.prune_batches_per_run; ++i) {
      const std::size_t pruned = db::prune_rate_buckets(connections_, before, settings_.prune_batch);
      report.rate_buckets_pruned += pruned;
      if (pruned < settings_.prune_batch) break;
    }
  });
  if (settings_.stripe_recovery) {
    run_task(stripe_recovery_schedule, settings_.stripe_recovery_interval, now, report, [&] {
      db::pool::lease lease = connections_.checkout();
      pqxx::work tx(lease.connection());
      report.stripe_recovery_jobs +=
          db::schedule_stripe_recovery(tx, settings_.stripe_platform_key, settings_.stripe_recovery_tenants);
      tx.commit();
    });
  }
  if (metrics_ != nullptr) {
    try {
      refresh_queue_depth(now);
      refresh_revoking(now);
    } catch (const std::exception& error) {
      ++report.failures;
      log_.warn("reading queue depth failed; the gauges keep their last values", {{"error", error.what()}});
    }
  }
  return report;
}

void scheduler::schedule_syncs(scheduler_report& report, const std::optional<std::string>& now) {
  const std::int64_t interval_ms = settings_.sync_interval.count();
  const std::int64_t jitter_ms = interval_ms * settings_.sync_jitter_percent / 100;
  try {
    for (std::uint32_t i = 0; i < settings_.sync_batches_per_tick; ++i) {
      // Each statement gets its own jitter seed, so one seed does not fix every connection's
      // offset for ever: a connection lands on a different point of the window each period.
      const auto seed = static_cast<std::int64_t>(random_() >> 1);
      db::pool::lease lease = connections_.checkout();
      pqxx::work tx(lease.connection(), "bankworker_schedule_syncs");
      const pqxx::row row = tx.exec_params1(schedule_syncs_sql, null_or(now), interval_ms, jitter_ms, seed,
                                            static_cast<int>(settings_.sync_batch));
      tx.commit();
      const auto picked = row[0].as<std::size_t>();
      BW_INVARIANT(picked <= settings_.sync_batch);
      report.connections_scheduled += picked;
      report.sync_jobs_enqueued += row[1].as<std::size_t>();
      report.sync_backlog = picked == settings_.sync_batch;
      if (!report.sync_backlog) break;
    }
  } catch (const std::exception& error) {
    // Nothing was lost: the connections stay due and the next tick takes them.
    ++report.failures;
    log_.warn("scheduling periodic syncs failed; the next tick tries again", {{"error", error.what()}});
  }
}

template <class Task>
void scheduler::run_task(std::string_view name, std::chrono::milliseconds interval,
                         const std::optional<std::string>& now, scheduler_report& report, Task task) {
  const std::string task_name(name);
  try {
    {
      // The claim commits on its own: it is the record that this period's run is ours.
      db::pool::lease lease = connections_.checkout();
      pqxx::work tx(lease.connection(), "bankworker_claim_schedule");
      const bool claimed = tx.exec_params1(claim_schedule_sql, null_or(now), task_name, interval.count())[0].as<bool>();
      tx.commit();
      if (!claimed) return;
    }
    report.tasks_run.push_back(task_name);
    task();
  } catch (const std::exception& error) {
    ++report.failures;
    log_.warn("maintenance task failed; it runs again after the retry delay",
              {{"task", task_name}, {"error", error.what()}});
    try {
      db::pool::lease lease = connections_.checkout();
      pqxx::work tx(lease.connection(), "bankworker_defer_schedule");
      tx.exec_params(defer_schedule_sql, null_or(now), task_name, settings_.retry_delay.count());
      tx.commit();
    } catch (const std::exception& deferral) {
      // The task simply waits for its whole interval instead.
      log_.warn("could not bring a failed maintenance task forward", {{"task", task_name}, {"error", deferral.what()}});
    }
  }
}

std::size_t scheduler::prune_external_calls(const std::optional<std::string>& now) {
  std::size_t pruned = 0;
  for (std::uint32_t i = 0; i < settings_.prune_batches_per_run; ++i) {
    db::pool::lease lease = connections_.checkout();
    pqxx::work tx(lease.connection(), "bankworker_prune_external_calls");
    const auto deleted = tx.exec_params1(prune_external_calls_sql, null_or(now),
                                         static_cast<std::int64_t>(settings_.external_calls_retention.count()),
                                         static_cast<int>(settings_.prune_batch))[0]
                             .as<std::size_t>();
    tx.commit();
    pruned += deleted;
    if (deleted < settings_.prune_batch) break;
  }
  return pruned;
}

void scheduler::refresh_revoking(const std::optional<std::string>& now) {
  db::pool::lease lease = connections_.checkout();
  pqxx::read_transaction tx(lease.connection(), "bankworker_revoking_connections");
  const pqxx::row row = tx.exec_params1(revoking_connections_sql, null_or(now));
  revoking_connections_.store(row[0].as<std::int64_t>(), std::memory_order_relaxed);
  revoking_oldest_s_.store(row[1].as<std::int64_t>(), std::memory_order_relaxed);
}

void scheduler::refresh_queue_depth(const std::optional<std::string>& now) {
  BW_ASSERT(metrics_ != nullptr);
  pqxx::result rows;
  {
    db::pool::lease lease = connections_.checkout();
    pqxx::read_transaction tx(lease.connection(), "bankworker_queue_depth");
    rows = tx.exec_params(queue_depth_sql, null_or(now), static_cast<int>(queue_depth_series_max));
  }
  // A pair missing from this answer has nothing waiting: it reads zero rather than its old value.
  for (auto& [key, series] : depth_index_) {
    series->jobs = 0;
    series->oldest_s = 0;
  }
  for (const pqxx::row& row : rows) {
    std::pair<std::string, int> key{row[0].as<std::string>(), row[1].as<int>()};
    auto found = depth_index_.find(key);
    if (found == depth_index_.end()) {
      if (depth_index_.size() >= queue_depth_series_max) continue;
      depth_series* series = &depth_series_.emplace_back();
      const metric_labels labels{{"kind", key.first}, {"priority", std::to_string(key.second)}};
      // The registry lock is taken here and again while rendering, never while holding another.
      metrics_->add_gauge("bankworker_queue_jobs", "Jobs waiting to run (due now), by kind and priority.", labels,
                          [series] { return series->jobs.load(std::memory_order_relaxed); });
      metrics_->add_gauge("bankworker_queue_oldest_job_age_seconds",
                          "Age of the oldest job waiting to run, by kind and priority.", labels,
                          [series] { return series->oldest_s.load(std::memory_order_relaxed); });
      found = depth_index_.emplace(std::move(key), series).first;
    }
    found->second->jobs = row[2].as<std::int64_t>();
    found->second->oldest_s = row[3].as<std::int64_t>() / 1000;
  }
}

}  // namespace bankworker::worker
