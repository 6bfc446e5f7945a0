#include "service/metrics.hpp"

#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/assert.hpp"

namespace bankworker::service {

namespace {

bool is_metric_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool is_label_name(std::string_view name) noexcept {
  return is_metric_name(name) && name.find(':') == std::string_view::npos && !name.starts_with("__");
}

// Only BW_ASSERT calls this, which release builds (NDEBUG) compile away: hence maybe_unused.
[[maybe_unused]] bool are_label_names(const metric_labels& labels, bool le_allowed) noexcept {
  for (const auto& [label, value] : labels) {
    if (!is_label_name(label)) return false;
    if (!le_allowed && label == "le") return false;
  }
  return true;
}

void append_label_value(std::string_view value, std::string& out) {
  for (const char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
}

void append_help(std::string_view help, std::string& out) {
  for (const char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
}

// {a="1",b="2"} with an optional extra label (le for histogram buckets).
void append_labels(const metric_labels& labels, std::string& out, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out.push_back('{');
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out.push_back(',');
    first = false;
    out += name;
    out += "=\"";
    append_label_value(value, out);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out.push_back(',');
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out.push_back('"');
  }
  out.push_back('}');
}

// Microseconds as decimal seconds, in text: 1500 -> "0.0015", 2000000 -> "2".
std::string seconds_text(std::uint64_t microseconds) {
  std::string text = std::to_string(microseconds / 1'000'000);
  std::uint64_t fraction = microseconds % 1'000'000;
  if (fraction == 0) return text;
  char digits[8];
  std::snprintf(digits, sizeof digits, "%06llu", static_cast<unsigned long long>(fraction));
  std::string tail(digits);
  while (!tail.empty() && tail.back() == '0') tail.pop_back();
  return text + "." + tail;
}

}  // namespace

duration_histogram::duration_histogram(std::vector<std::uint64_t> bounds_us)
    : bounds_us_(std::move(bounds_us)), buckets_(new std::atomic<std::uint64_t>[bounds_us_.size() + 1]) {
  BW_ASSERT(std::is_sorted(bounds_us_.begin(), bounds_us_.end()));
  for (std::size_t i = 0; i <= bounds_us_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void duration_histogram::record_us(std::uint64_t value_us) noexcept {
  const auto it = std::lower_bound(bounds_us_.begin(), bounds_us_.end(), value_us);
  buckets_[static_cast<std::size_t>(it - bounds_us_.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(value_us, std::memory_order_relaxed);
}

std::uint64_t duration_histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_us_.size(); ++i) total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

std::uint64_t duration_histogram::bucket_count(std::size_t index) const noexcept {
  BW_ASSERT(index <= bounds_us_.size());
  return buckets_[index].load(std::memory_order_relaxed);
}

std::vector<std::uint64_t> default_latency_bounds_us() {
  return {1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};
}

metrics_registry::family& metrics_registry::family_for(std::string_view name, std::string_view help, kind type) {
  BW_ASSERT(is_metric_name(name));
  for (family& f : families_) {
    if (f.name == name) {
      BW_ASSERT(f.type == type);
      return f;
    }
  }
  families_.push_back({std::string(name), std::string(help), type, {}});
  return families_.back();
}

metrics_registry::counter& metrics_registry::add_counter(std::string_view name, std::string_view help,
                                                         metric_labels labels) {
  std::lock_guard lock(mutex_);
  BW_ASSERT(are_label_names(labels, true));
  family& f = family_for(name, help, kind::counter);
  for (series& s : f.members) {
    if (s.labels == labels) {
      BW_ASSERT(s.counter_value != nullptr);  // not a series registered with add_counter_reader
      return *s.counter_value;
    }
  }
  counter& value = counters_.emplace_back(0);
  f.members.push_back({std::move(labels), &value, nullptr, {}, {}, false});
  return value;
}

duration_histogram& metrics_registry::add_histogram(std::string_view name, std::string_view help,
                                                    metric_labels labels, std::vector<std::uint64_t> bounds_us) {
  std::lock_guard lock(mutex_);
  BW_ASSERT(are_label_names(labels, false));
  family& f = family_for(name, help, kind::histogram);
  for (series& s : f.members) {
    if (s.labels == labels) return *s.histogram_value;
  }
  duration_histogram& value = histograms_.emplace_back(std::move(bounds_us));
  f.members.push_back({std::move(labels), nullptr, &value, {}, {}, false});
  return value;
}

void metrics_registry::add_gauge(std::string_view name, std::string_view help, metric_labels labels,
                                 gauge_reader read) {
  std::lock_guard lock(mutex_);
  BW_ASSERT(are_label_names(labels, true));
  family& f = family_for(name, help, kind::gauge);
  f.members.push_back({std::move(labels), nullptr, nullptr, std::move(read), {}, false});
}

void metrics_registry::add_counter_reader(std::string_view name, std::string_view help, metric_labels labels,
                                          std::function<std::uint64_t()> read) {
  std::lock_guard lock(mutex_);
  for (const auto& [label, value] : labels) BW_ASSERT(is_label_name(label));
  family& f = family_for(name, help, kind::counter);
  f.members.push_back({std::move(labels), nullptr, nullptr, {}, std::move(read), false});
}

void metrics_registry::add_seconds_counter_reader(std::string_view name, std::string_view help,
                                                  std::function<std::uint64_t()> read_us) {
  std::lock_guard lock(mutex_);
  family& f = family_for(name, help, kind::counter);
  f.members.push_back({{}, nullptr, nullptr, {}, std::move(read_us), true});
}

std::string metrics_registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  out.reserve(4096);
  for (const family& f : families_) {
    out += "# HELP " + f.name + " ";
    append_help(f.help, out);
    out += "\n# TYPE " + f.name + (f.type == kind::counter ? " counter\n" : f.type == kind::gauge ? " gauge\n" : " histogram\n");
    for (const series& s : f.members) {
      if (f.type == kind::counter) {
        out += f.name;
        append_labels(s.labels, out);
        const std::uint64_t value =
            s.counter_value != nullptr ? s.counter_value->load(std::memory_order_relaxed) : s.counter_reader();
        out += " " + (s.reader_in_microseconds ? seconds_text(value) : std::to_string(value)) + "\n";
      } else if (f.type == kind::gauge) {
        out += f.name;
        append_labels(s.labels, out);
        out += " " + std::to_string(s.gauge()) + "\n";
      } else {
        const duration_histogram& h = *s.histogram_value;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= h.bounds_us().size(); ++i) {
          cumulative += h.bucket_count(i);
          out += f.name + "_bucket";
          append_labels(s.labels, out, "le", i < h.bounds_us().size() ? seconds_text(h.bounds_us()[i]) : "+Inf");
          out += " " + std::to_string(cumulative) + "\n";
        }
        out += f.name + "_sum";
        append_labels(s.labels, out);
        out += " " + seconds_text(h.sum_us()) + "\n";
        // The count is the +Inf bucket, read once, so the two always agree in one scrape.
        out += f.name + "_count";
        append_labels(s.labels, out);
        out += " " + std::to_string(cumulative) + "\n";
      }
    }
  }
  return out;
}

std::int64_t process_resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0;
  std::int64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE));
}

namespace {

std::int64_t process_virtual_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0;
  if (!(statm >> size_pages)) return 0;
  return size_pages * static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t process_cpu_us() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  const auto us = [](const timeval& t) {
    return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000 + static_cast<std::uint64_t>(t.tv_usec);
  };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

std::int64_t process_open_fds() {
  std::error_code error;
  std::int64_t count = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error), end; !error && it != end; it.increment(error)) {
    ++count;
  }
  return count;
}

std::int64_t process_max_fds() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  return static_cast<std::int64_t>(limit.rlim_cur);
}

}  // namespace

void add_process_metrics(metrics_registry& metrics) {
  const std::int64_t started_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  metrics.add_seconds_counter_reader("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                                     process_cpu_us);
  metrics.add_gauge("process_resident_memory_bytes", "Resident memory size in bytes.", {}, process_resident_bytes);
  metrics.add_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", {}, process_virtual_bytes);
  metrics.add_gauge("process_open_fds", "Number of open file descriptors.", {}, process_open_fds);
  metrics.add_gauge("process_max_fds", "Maximum number of open file descriptors.", {}, process_max_fds);
  metrics.add_gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", {},
                    [started_s] { return started_s; });
}

void add_build_info(metrics_registry& metrics, std::string_view version, std::string_view commit) {
  metrics.add_gauge("bankworker_build_info", "Always 1; its labels say which version and commit this process runs.",
                    {{"version", std::string(version)}, {"commit", std::string(commit)}}, [] { return std::int64_t{1}; });
}

}  // namespace bankworker::service
