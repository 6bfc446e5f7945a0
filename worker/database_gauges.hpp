#pragma once
// Gauges read from the database for the operators' alerts: jobs by kind and state (available,
// scheduled, running, retryable, dead) and the age of each kind's oldest due job, whether the last
// read reached the database at all, and the providers' own gauges (Plaid connections by status,
// Stripe events not yet posted, …), each added as a service::database_gauge.
//
// One cheap round trip every refresh_interval per process, never per scrape: the statements
// (queue::job_gauges_sql and the providers', each owned by the room that owns its table) go down
// one connection in one pipeline, and the gauges read atomics the refresh stored. A scrape
// therefore costs the database nothing and sees values at most refresh_interval old; a read that
// fails keeps the last values and sets bankworker_database_up to 0. Every series of the known job
// kinds and states exists from start-up at zero, so an increase() or absent() alert sees the
// first dead job; a provider registers its own series at zero the same way.
//
// The database going away and coming back are each logged once (error, then info), not once per
// refresh.
//
// The same loop carries this process's heartbeat (queue/worker_processes.hpp): a refresh beats
// first when the process's heartbeat interval has passed since the last beat, so a failing gauge
// statement does not silence the process, and counts every process by state
// (bankworker_worker_processes) in its pipeline.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "db/pool.hpp"
#include "queue/worker_processes.hpp"
#include "service/log.hpp"
#include "service/provider.hpp"
#include "service/metrics.hpp"

namespace bankworker::worker {

using service::logger;
using service::metrics_registry;

// Job kinds shown; kinds beyond it (only a misbehaving enqueuer makes them) are left out.
inline constexpr std::size_t database_gauge_kinds_max = 64;
inline constexpr std::chrono::milliseconds database_gauge_refresh_interval_min{100};
inline constexpr std::chrono::milliseconds database_gauge_refresh_interval_max{60'000};

// The states bankworker_jobs shows, in the order the SQL names them.
inline constexpr std::string_view job_gauge_states[] = {"available", "scheduled", "running", "retryable", "dead"};
// Provider statements in the pipeline, at most.
inline constexpr std::size_t database_gauge_statements_max = 16;

struct database_gauge_settings {
  std::chrono::milliseconds refresh_interval{5'000};
};

class database_gauges {
 public:
  // Registers every series at zero: each of `kinds` in each state.
  // Everything passed by reference outlives this object and the registry's last render.
  database_gauges(boost::asio::io_context& io, boost::asio::thread_pool& blocking, db::pool& connections,
                  metrics_registry& metrics, logger& log, const std::vector<std::string>& kinds,
                  database_gauge_settings settings = {});
  database_gauges(const database_gauges&) = delete;
  database_gauges& operator=(const database_gauges&) = delete;

  // Adds a provider's statement and reader; before run() or the first refresh().
  void add_gauge(service::database_gauge gauge);

  // Beats for `process` from now on, its heartbeat interval after `registered_at` first (the
  // runtime registers the process before the loops start). Before run(); `process` outlives the
  // last refresh.
  void add_heartbeat(queue::worker_process_record& process,
                     std::chrono::steady_clock::time_point registered_at = std::chrono::steady_clock::now());

  // Refreshes until stop(). Spawn it on executor().
  boost::asio::awaitable<void> run();
  void stop();
  boost::asio::strand<boost::asio::io_context::executor_type>& executor() noexcept { return strand_; }

  // One refresh, blocking (tests call it directly): one round trip, then the atomics. Returns
  // whether the database answered; logs only the change between answering and not.
  bool refresh();

 private:
  struct kind_series {
    std::atomic<std::int64_t> jobs[std::size(job_gauge_states)]{};
    std::atomic<std::int64_t> oldest_due_s{0};
  };

  kind_series* series_for(const std::string& kind);
  void beat_if_due();
  void read_database();

  boost::asio::thread_pool& blocking_;
  db::pool& connections_;
  metrics_registry& metrics_;
  logger& log_;
  const database_gauge_settings settings_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  std::atomic<bool> stopping_{false};
  // Refresh-only state (one refresh at a time); the gauges read the atomics inside.
  std::map<std::string, kind_series*, std::less<>> kinds_;
  std::deque<kind_series> kind_storage_;
  std::vector<service::database_gauge> gauges_;
  std::atomic<std::int64_t> database_up_{0};
  std::atomic<std::int64_t> processes_[std::size(queue::worker_process_states)]{};
  queue::worker_process_record* heartbeat_ = nullptr;
  std::chrono::steady_clock::time_point last_beat_{};
  // Start-up has just reached the database (run_service checks the schema first).
  bool was_up_ = true;
};

}  // namespace bankworker::worker
