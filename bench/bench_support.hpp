#pragma once
// What several benchmarks share: timing, and a throwaway database next to the one they were given.

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <pqxx/pqxx>

namespace bankworker::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The machine's CPU time so far (/proc/stat, all CPUs, in clock ticks): how much of a measurement
// the host took away (steal) and left unused (idle). On a shared virtual machine a figure means
// little without them.
struct cpu_sample {
  std::uint64_t total = 0;
  std::uint64_t idle = 0;   // idle + iowait
  std::uint64_t steal = 0;
};

inline cpu_sample sample_cpu() {
  std::ifstream in("/proc/stat");
  std::string label;
  std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> label >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (!in || label != "cpu") return {};
  return {user + nice + system + idle + iowait + irq + softirq + steal, idle + iowait, steal};
}

// Steal and idle as percentages of the CPU time between two samples (0 when nothing was read).
struct cpu_share {
  double steal_pct = 0;
  double idle_pct = 0;
};

inline cpu_share cpu_between(const cpu_sample& before, const cpu_sample& after) {
  if (after.total <= before.total) return {};
  const double span = static_cast<double>(after.total - before.total);
  return {100.0 * static_cast<double>(after.steal - before.steal) / span,
          100.0 * static_cast<double>(after.idle - before.idle) / span};
}

// CPU seconds (user + system) a process has used so far; 0 when it is gone.
inline double process_cpu_s(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t after_name = text.rfind(')');
  if (after_name == std::string::npos) return 0;
  std::istringstream fields(text.substr(after_name + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::strtod(field.c_str(), nullptr);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// CPU seconds used so far by the PostgreSQL backends serving `database` (their process titles
// name it). On a machine shared with other work, CPU per event says more than events per second.
inline double database_backends_cpu_s(const std::string& database) {
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string title;
    std::getline(in, title, '\0');
    if (title.starts_with("postgres: ") && title.find(" " + database + " ") != std::string::npos) {
      total += process_cpu_s(pid);
    }
  }
  return total;
}

// Microseconds of `cpu_s` per unit of work; 0 when no unit was done. It says where the time went
// and compares with a goal's budget (two cores at N units/s allow 2,000,000/N us per unit). It
// moves with the host too, if less, so compare binaries in interleaved runs.
inline double us_per(double cpu_s, long units) { return units > 0 ? 1e6 * cpu_s / static_cast<double>(units) : 0; }

// The value of a benchmark's option: all of `text` a whole number within [low, high]. Anything
// else ("on", "4k", a sign, out of range) ends the bench with exit 2 and the reason, rather than
// running a different benchmark than the one asked for.
inline std::size_t option_number(const char* bench, std::string_view option, std::string_view text, std::size_t low,
                                 std::size_t high) {
  std::size_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size() || value < low || value > high) {
    std::fprintf(stderr, "%s: %.*s must be a whole number from %zu to %zu, not \"%.*s\"\n", bench,
                 static_cast<int>(option.size()), option.data(), low, high, static_cast<int>(text.size()),
                 text.data());
    std::exit(2);
  }
  return value;
}

// postgresql://user:pw@host:port/db?x → same URL with another database.
inline std::string with_database(const std::string& url, const std::string& database) {
  const std::size_t scheme = url.find("://");
  const std::size_t slash = scheme == std::string::npos ? std::string::npos : url.find('/', scheme + 3);
  if (slash == std::string::npos) return url + " dbname=" + database;
  const std::size_t query = url.find('?', slash);
  return url.substr(0, slash + 1) + database + (query == std::string::npos ? "" : url.substr(query));
}

// BANKWORKER_DATABASE_URL, the cluster the bench works on; exits 2 with a hint when it is unset.
inline std::string cluster_url(const char* bench_name) {
  const char* url = std::getenv("BANKWORKER_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "%s: set BANKWORKER_DATABASE_URL (make bench sets it to the private cluster)\n", bench_name);
    std::exit(2);
  }
  return url;
}

// A database of the bench's own on that cluster (prefix and process id), made at construction and
// dropped (closing whatever is still connected) at destruction: a bench never touches the
// database it was pointed at.
class scratch_database {
 public:
  scratch_database(std::string cluster_url, const std::string& prefix)
      : cluster_url_(std::move(cluster_url)), name_(prefix + "_" + std::to_string(::getpid())) {
    pqxx::connection admin(cluster_url_);
    pqxx::nontransaction(admin).exec("CREATE DATABASE " + admin.quote_name(name_));
    url_ = with_database(cluster_url_, name_);
  }
  scratch_database(const scratch_database&) = delete;
  scratch_database& operator=(const scratch_database&) = delete;
  ~scratch_database() {
    try {
      pqxx::connection admin(cluster_url_);
      pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + admin.quote_name(name_) + " WITH (FORCE)");
    } catch (const std::exception& error) {
      std::fprintf(stderr, "could not drop the bench database %s: %s\n", name_.c_str(), error.what());
    }
  }
  const std::string& name() const noexcept { return name_; }
  const std::string& url() const noexcept { return url_; }

 private:
  std::string cluster_url_;
  std::string name_;
  std::string url_;
};

// The first column of the first row of `sql` (a count), outside any transaction.
inline long count_of(pqxx::connection& connection, const std::string& sql) {
  pqxx::nontransaction tx(connection);
  return tx.exec1(sql)[0].as<long>();
}

}  // namespace bankworker::bench
