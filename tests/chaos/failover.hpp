#pragma once
// The failover run's write probe and write gaps (README.md here, "Failover"). Every interval the
// probe writes once through the multi-host URL (the database's view: is there a primary taking
// writes?) and sends every worker one freshly signed Stripe event of a type that posts nothing
// (the worker's view: does its whole write path work, pool and inbox included?), each on a thread
// of its own so that one slow answer delays no other series. What it records are the times of
// the writes that succeeded; a failover's write gap is the longest stretch without one.

#include <atomic>
#include <cstdint>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bankworker::chaos {

using probe_clock = std::chrono::steady_clock;

class write_probe {
 public:
  // `refused(id, body)` gets every probe event a worker did not acknowledge, to deliver until it
  // is (the storm does, as Stripe would); it is called on the probe's threads.
  // `stalled(worker)` is called (on the probe's thread) once per stall: a worker that has not
  // written for stall_after while the database took writes, for the run to record what it is
  // doing (its threads' stacks) before it recovers or the run ends.
  write_probe(std::string database_url, std::vector<std::string> worker_urls, std::string platform_secret,
              std::string account, std::chrono::milliseconds interval,
              std::function<void(const std::string& id, const std::string& body)> refused,
              std::function<void(std::size_t worker)> stalled);
  static constexpr std::chrono::seconds stall_after{20};
  write_probe(const write_probe&) = delete;
  write_probe& operator=(const write_probe&) = delete;
  ~write_probe();

  void stop();
  // After stop(): every probe event sent (id, JSON), and the times of successful writes.
  std::vector<std::pair<std::string, std::string>> events() const;
  std::vector<probe_clock::time_point> database_writes() const;
  std::vector<probe_clock::time_point> worker_writes(std::size_t worker) const;
  // The port of the server that took the database write made at `at` (one of database_writes()).
  std::optional<int> database_port_at(probe_clock::time_point at) const;
  // Probe commits the server acknowledged without its synchronous standby (not counted as writes).
  std::uint64_t unreplicated_commits() const;

 private:
  void probe_database();
  void probe_worker(std::size_t worker);
  // Whether `worker` has not written for stall_after while the database took a write within the
  // last two intervals.
  bool worker_stalled(std::size_t worker) const;

  const std::string database_url_;
  const std::vector<std::string> worker_urls_;
  const std::string platform_secret_;
  const std::string account_;
  const std::chrono::milliseconds interval_;
  const std::function<void(const std::string&, const std::string&)> refused_;
  const std::function<void(std::size_t)> stalled_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;  // guards the five below
  std::vector<std::pair<std::string, std::string>> events_;
  std::vector<probe_clock::time_point> database_writes_;
  std::vector<int> database_ports_;  // the server of each database write
  std::uint64_t unreplicated_commits_ = 0;
  std::vector<std::vector<probe_clock::time_point>> worker_writes_;
  std::vector<std::thread> threads_;
};

// The longest stretch without a successful write that ends after `from` and begins before `to`:
// where it began (the last write before it) and ended (the first after). Nothing when there was
// no write after it.
struct write_gap {
  probe_clock::time_point last_before{};
  probe_clock::time_point first_after{};
  double seconds() const { return std::chrono::duration<double>(first_after - last_before).count(); }
};
std::optional<write_gap> longest_gap(const std::vector<probe_clock::time_point>& writes, probe_clock::time_point from,
                                     probe_clock::time_point to);

// The first write at or after `at`, as seconds after it; nothing when there was none.
std::optional<double> first_write_after(const std::vector<probe_clock::time_point>& writes, probe_clock::time_point at);

}  // namespace bankworker::chaos
