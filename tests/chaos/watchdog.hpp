#pragma once
// The run's hard deadline (issue #18). A run that is still going when its budget is spent — a
// formation that never heals, a wait that outlives its own timeouts, a join on a stuck thread —
// ends with one line saying how long it ran and which phase it was stuck in, its children killed
// and its PostgreSQL stopped (data and logs kept), and exit status 1: never a hang that only
// ctest's TIMEOUT ends, with no summary. A run stopped with SIGTERM, SIGINT or SIGHUP (ctest
// interrupted, a terminal closed) ends the same way, rather than leaving its workers, simulators and
// PostgreSQL (or pg_auto_failover formation) running.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace bankworker::chaos {

class run_watchdog {
 public:
  // Starts counting now and catches the stop signals. `stop_database` runs on the watchdog's thread
  // once the budget is spent or a stop signal came, after this process's children are killed; it
  // must bound its own wait.
  run_watchdog(std::chrono::seconds budget, std::function<void()> stop_database);
  run_watchdog(const run_watchdog&) = delete;
  run_watchdog& operator=(const run_watchdog&) = delete;
  // Disarms it.
  ~run_watchdog();

  // What the run is doing now ("chaos phase", "settling: …"), named in the timeout's message.
  void phase(std::string name);

 private:
  void watch();
  [[noreturn]] void end_run(const std::string& why, const std::string& stuck_in);

  const std::chrono::seconds budget_;
  const std::chrono::steady_clock::time_point started_;
  const std::function<void()> stop_database_;
  std::mutex mutex_;  // guards the two below
  std::condition_variable disarmed_;
  bool done_ = false;
  std::string phase_ = "set-up";
  std::thread thread_;
};

// SIGKILL to every process whose parent is this one (workers, simulators, a CLI command or a
// script in flight), found in /proc; returns how many.
int kill_children() noexcept;

}  // namespace bankworker::chaos
