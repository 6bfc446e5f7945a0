#pragma once
// The scheduler: periodic work that must happen once per period however many worker processes
// share the database, and work every process does on each tick.
//
//   - Provider tasks (service::scheduled_task): each provider adds its own, e.g. Plaid's periodic
//     syncs (every tick: due connections get a plaid.sync job, claimed with SKIP LOCKED so
//     concurrent schedulers take disjoint rows) and Stripe's missed-event recovery (once per
//     interval). A task that reports a backlog makes the next tick come at once.
//   - Maintenance: tasks in bankworker.schedules, each claimed by one process per interval
//     (queue::claim_schedule): finished jobs past retention, external-call log rows past 30 days
//     (DESIGN.md §4), idle rate-limit buckets. A task that fails asks to run again after
//     retry_delay rather than a whole interval later (queue::defer_schedule).
//   - Queue depth and oldest-job age by kind and priority for /metrics, read once per tick from one
//     bounded statement (queue::read_queue_depth), when a metrics registry is given.
//
// Threads: run() and its timer live on one strand; every database call runs on the DB thread
// pool through queue::run_blocking, one tick at a time. tick() is the same work called directly
// (tests drive it without an io_context).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/limits.hpp"
#include "db/pool.hpp"
#include "queue/queue.hpp"
#include "service/log.hpp"
#include "service/provider.hpp"
#include "service/metrics.hpp"

namespace bankworker::worker {

using service::logger;
using service::metrics_registry;

// Names of the maintenance tasks in bankworker.schedules.
inline constexpr std::string_view prune_jobs_schedule = "prune.jobs";
inline constexpr std::string_view prune_external_calls_schedule = "prune.external_calls";
inline constexpr std::string_view prune_rate_buckets_schedule = "prune.rate_buckets";

// Bounds of the settings (STYLE.md §5); check_scheduler_settings enforces them.
inline constexpr std::chrono::milliseconds scheduler_tick_min{100};
inline constexpr std::chrono::milliseconds scheduler_tick_max{5 * 60'000};
inline constexpr std::chrono::milliseconds maintenance_interval_min{1'000};
inline constexpr std::chrono::milliseconds maintenance_interval_max{7 * 24 * 3'600'000LL};
inline constexpr std::uint32_t prune_batch_max = 100'000;         // the prune functions refuse more
inline constexpr std::uint32_t prune_batches_per_run_max = 1'000;
inline constexpr std::size_t queue_depth_series_max = 200;        // (kind, priority) pairs shown
static_assert(prune_batch_max <= limits::job_prune_batch_max, "job_queue::prune takes batches up to its own limit");

struct scheduler_settings {
  // How often every-tick tasks run and due maintenance is looked for.
  std::chrono::milliseconds tick{15'000};
  // Maintenance intervals and retentions.
  std::chrono::milliseconds prune_jobs_interval{60'000};
  std::chrono::hours succeeded_retention{24};
  std::chrono::hours dead_retention{24 * 30};
  std::chrono::milliseconds prune_external_calls_interval{3'600'000};
  std::chrono::hours external_calls_retention{24 * 30};
  std::chrono::milliseconds prune_rate_buckets_interval{600'000};
  std::uint32_t prune_batch = 10'000;
  std::uint32_t prune_batches_per_run = 10;
  // A maintenance task that failed runs again after this instead of a whole interval later.
  std::chrono::milliseconds retry_delay{60'000};
  // Empty: the database's clock decides (production). Tests inject one.
  queue::clock_function clock;
};

// Throws std::invalid_argument naming the first setting out of its bounds.
void check_scheduler_settings(const scheduler_settings& settings);

// What one tick did.
struct scheduler_report {
  std::vector<std::string> tasks_run;  // interval tasks this process claimed and ran
  std::size_t jobs_pruned = 0;
  std::size_t external_calls_pruned = 0;
  std::size_t rate_buckets_pruned = 0;
  std::size_t failures = 0;            // each one logged; the work is tried again later
  bool backlog = false;                // a task had more work due at once: tick again soon
};

class scheduler {
 public:
  // Everything passed by reference must outlive the scheduler. `metrics` may be null; when given,
  // its queue gauges read this scheduler, so it must not render after the scheduler is gone.
  scheduler(boost::asio::io_context& io, boost::asio::thread_pool& blocking, db::pool& connections,
            queue::job_queue& jobs, scheduler_settings settings, logger& log, metrics_registry* metrics = nullptr);
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  // Adds a provider's task; before run() or the first tick().
  void add_task(service::scheduled_task task);

  // Ticks until stop(). Spawn it on executor().
  boost::asio::awaitable<void> run();
  // Stops after the tick in progress, if any. Safe from any thread.
  void stop();
  boost::asio::strand<boost::asio::io_context::executor_type>& executor() noexcept { return strand_; }

  // One tick, blocking: every-tick tasks, due interval tasks and maintenance, queue gauges. Not concurrently with
  // itself on one scheduler (run() never does that).
  scheduler_report tick();

 private:
  struct depth_series {
    std::atomic<std::int64_t> jobs{0};
    std::atomic<std::int64_t> oldest_s{0};
  };

  std::optional<std::string> now_text() const;
  template <class Task>
  void run_task(std::string_view name, std::chrono::milliseconds interval, const std::optional<std::string>& now,
                scheduler_report& report, Task task);
  std::size_t prune_external_calls(const std::optional<std::string>& now);
  void refresh_queue_depth(const std::optional<std::string>& now);

  boost::asio::thread_pool& blocking_;
  db::pool& connections_;
  queue::job_queue& jobs_;
  const scheduler_settings settings_;
  logger& log_;
  metrics_registry* metrics_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  std::atomic<bool> stopping_{false};
  std::vector<service::scheduled_task> tasks_;
  // Tick-only state (one tick at a time); the gauges read the atomics inside.
  std::map<std::pair<std::string, int>, depth_series*> depth_index_;
  std::deque<depth_series> depth_series_;
};

}  // namespace bankworker::worker
