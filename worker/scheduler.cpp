#include "worker/scheduler.hpp"

#include <stdexcept>

#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include "core/assert.hpp"
#include "db/rate_limits.hpp"
#include "db/external_calls.hpp"
#include "queue/run_blocking.hpp"
#include "queue/schedules.hpp"

namespace bankworker::worker {

using service::logger;
using service::metric_labels;
using service::metrics_registry;

namespace {

template <class Duration>
void check_range(const char* name, Duration value, Duration low, Duration high) {
  if (value < low || value > high) throw std::invalid_argument(std::string("scheduler ") + name + " out of range");
}

}  // namespace

void check_scheduler_settings(const scheduler_settings& s) {
  check_range("tick", s.tick, scheduler_tick_min, scheduler_tick_max);
  check_range("prune_jobs_interval", s.prune_jobs_interval, maintenance_interval_min, maintenance_interval_max);
  check_range("prune_external_calls_interval", s.prune_external_calls_interval, maintenance_interval_min,
              maintenance_interval_max);
  check_range("prune_rate_buckets_interval", s.prune_rate_buckets_interval, maintenance_interval_min,
              maintenance_interval_max);
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
}

void scheduler::add_task(service::scheduled_task task) {
  BW_ASSERT(task.run != nullptr);
  tasks_.push_back(std::move(task));
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
      backlog = report.backlog;
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
  for (const service::scheduled_task& task : tasks_) {
    if (task.interval.count() != 0) continue;
    try {
      report.backlog = task.run(now) || report.backlog;
    } catch (const std::exception& error) {
      // Nothing was lost: what was due stays due and the next tick takes it.
      ++report.failures;
      log_.warn("a periodic task failed; the next tick tries again", {{"task", task.name}, {"error", error.what()}});
    }
  }
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
  for (const service::scheduled_task& task : tasks_) {
    if (task.interval.count() == 0) continue;
    run_task(task.name, task.interval, now, report, [&] { report.backlog = task.run(now) || report.backlog; });
  }
  if (metrics_ != nullptr) {
    try {
      refresh_queue_depth(now);
    } catch (const std::exception& error) {
      ++report.failures;
      log_.warn("reading queue depth failed; the gauges keep their last values", {{"error", error.what()}});
    }
  }
  return report;
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
      const bool claimed = queue::claim_schedule(tx, task_name, interval, now);
      lease.commit(tx);
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
      queue::defer_schedule(tx, task_name, settings_.retry_delay, now);
      lease.commit(tx);
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
    const std::size_t deleted = db::prune_external_calls(tx, settings_.external_calls_retention,
                                                         static_cast<int>(settings_.prune_batch), now);
    lease.commit(tx);
    pruned += deleted;
    if (deleted < settings_.prune_batch) break;
  }
  return pruned;
}

void scheduler::refresh_queue_depth(const std::optional<std::string>& now) {
  BW_ASSERT(metrics_ != nullptr);
  pqxx::result rows;
  {
    db::pool::lease lease = connections_.checkout();
    pqxx::read_transaction tx(lease.connection(), "bankworker_queue_depth");
    rows = queue::read_queue_depth(tx, now, static_cast<int>(queue_depth_series_max));
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
