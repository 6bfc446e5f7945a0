#pragma once
// Metrics in the Prometheus text format (DESIGN.md §6, GET /metrics).
//
// Series are registered once, at wiring time, and return a reference the hot path increments
// with one relaxed atomic add: no lookup, lock or allocation per event. Values are integers end
// to end — durations are recorded in microseconds and printed as seconds with a decimal point
// placed in text — so no floating point is involved anywhere. Gauges whose value lives elsewhere
// (queue depth, resident memory) are callbacks read at scrape time.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bankworker::service {

using metric_labels = std::vector<std::pair<std::string, std::string>>;

// The webhook counter, shared by the Stripe and Plaid routes and the server's size refusals: one
// family, so its HELP must say it counts both providers whichever registers first.
inline constexpr std::string_view webhook_requests_name = "bankworker_webhook_requests_total";
inline constexpr std::string_view webhook_requests_help =
    "Webhook requests answered, by provider (stripe, plaid) and outcome (stored, duplicate, or why it was refused).";

// A histogram of durations. Bucket upper bounds are microseconds; the +Inf bucket is implicit.
class duration_histogram {
 public:
  explicit duration_histogram(std::vector<std::uint64_t> bounds_us);
  void record_us(std::uint64_t value_us) noexcept;

  const std::vector<std::uint64_t>& bounds_us() const noexcept { return bounds_us_; }
  std::uint64_t bucket_count(std::size_t index) const noexcept;  // not cumulative
  std::uint64_t count() const noexcept;
  std::uint64_t sum_us() const noexcept { return sum_us_.load(std::memory_order_relaxed); }

 private:
  std::vector<std::uint64_t> bounds_us_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds + 1 (the +Inf bucket)
  std::atomic<std::uint64_t> sum_us_{0};
};

// Latency buckets from 1 ms to 10 s, for HTTP requests, jobs and provider calls.
std::vector<std::uint64_t> default_latency_bounds_us();

class metrics_registry {
 public:
  using counter = std::atomic<std::uint64_t>;
  using gauge_reader = std::function<std::int64_t()>;

  // Names follow Prometheus conventions (bankworker_…_total for counters, base units); a name
  // or label that breaks the grammar is a programming error. Registering the same name and
  // labels twice returns the same series.
  counter& add_counter(std::string_view name, std::string_view help, metric_labels labels = {});
  duration_histogram& add_histogram(std::string_view name, std::string_view help, metric_labels labels = {},
                                    std::vector<std::uint64_t> bounds_us = default_latency_bounds_us());
  void add_gauge(std::string_view name, std::string_view help, metric_labels labels, gauge_reader read);
  // A counter whose value another component keeps (the key cache's hits, the HTTP server's
  // refusals), read at scrape time. `read` must be monotonic and outlive the registry's scrapes.
  void add_counter_reader(std::string_view name, std::string_view help, metric_labels labels,
                          std::function<std::uint64_t()> read);
  // The same for a counter of seconds kept in microseconds (CPU time), printed as decimal seconds.
  void add_seconds_counter_reader(std::string_view name, std::string_view help,
                                  std::function<std::uint64_t()> read_us);

  // The whole exposition, families in registration order.
  std::string render() const;

 private:
  enum class kind { counter, gauge, histogram };
  struct series {
    metric_labels labels;
    counter* counter_value = nullptr;
    duration_histogram* histogram_value = nullptr;
    gauge_reader gauge;
    std::function<std::uint64_t()> counter_reader;
    bool reader_in_microseconds = false;
  };
  struct family {
    std::string name;
    std::string help;
    kind type;
    std::vector<series> members;
  };

  family& family_for(std::string_view name, std::string_view help, kind type);

  mutable std::mutex mutex_;  // guards registration and rendering, never the hot path
  std::vector<family> families_;
  std::deque<counter> counters_;  // stable addresses
  std::deque<duration_histogram> histograms_;
};

// Resident set size of this process in bytes (from /proc/self/statm), or 0 when unknown.
std::int64_t process_resident_bytes();

// The standard process_* series of the Prometheus client libraries (process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
// process_max_fds, process_start_time_seconds), read from /proc at scrape time. The start time
// is when this is called, which run_service does at start-up.
void add_process_metrics(metrics_registry& metrics);

// bankworker_build_info{version,commit} 1, the usual way to join a version onto other series.
void add_build_info(metrics_registry& metrics, std::string_view version, std::string_view commit);

}  // namespace bankworker::service
