#pragma once
// Logs: one JSON object per line on stderr (DESIGN.md §3). The message and every string field pass
// through the redactor, so a token or key that slips into a log call is masked; a crypto::secret
// passed as a field prints "<redacted>". Lines are written whole under a lock, so lines from
// several threads never interleave.
//
// When stderr is connected to the journal (systemd sets $JOURNAL_STREAM to its device:inode, and
// the logger's descriptor is that very stream), each line starts with its sd-daemon(3) priority
// prefix (<3> error, <4> warn, <6> info, <7> debug), so `journalctl -p warning` filters by level.

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "crypto/secret.hpp"

namespace bankworker::service {

enum class log_level : int { debug = 0, info = 1, warn = 2, error = 3 };

std::optional<log_level> parse_log_level(std::string_view text) noexcept;
std::string_view to_string(log_level level) noexcept;

struct log_field {
  struct redacted {};
  using value_type = std::variant<std::string_view, std::int64_t, std::uint64_t, bool, redacted>;

  log_field(std::string_view key_, std::string_view value_) : key(key_), value(value_) {}
  log_field(std::string_view key_, const char* value_) : key(key_), value(std::string_view(value_)) {}
  log_field(std::string_view key_, const std::string& value_) : key(key_), value(std::string_view(value_)) {}
  log_field(std::string_view key_, bool value_) : key(key_), value(value_) {}
  log_field(std::string_view key_, int value_) : key(key_), value(std::int64_t{value_}) {}
  log_field(std::string_view key_, long value_) : key(key_), value(std::int64_t{value_}) {}
  log_field(std::string_view key_, long long value_) : key(key_), value(std::int64_t{value_}) {}
  log_field(std::string_view key_, unsigned value_) : key(key_), value(std::uint64_t{value_}) {}
  log_field(std::string_view key_, unsigned long value_) : key(key_), value(std::uint64_t{value_}) {}
  log_field(std::string_view key_, unsigned long long value_) : key(key_), value(std::uint64_t{value_}) {}
  log_field(std::string_view key_, const crypto::secret&) : key(key_), value(redacted{}) {}

  std::string_view key;  // a constant from the code: written as is, never redacted
  value_type value;
};

class logger {
 public:
  // `known_secrets` are masked wherever their exact text appears; they must outlive the logger.
  // Reads $JOURNAL_STREAM once, here, to decide on the priority prefix.
  explicit logger(log_level level, int fd = 2, std::vector<const crypto::secret*> known_secrets = {});

  void set_level(log_level level) noexcept { level_.store(static_cast<int>(level), std::memory_order_relaxed); }
  log_level level() const noexcept { return static_cast<log_level>(level_.load(std::memory_order_relaxed)); }
  bool enabled(log_level level) const noexcept {
    return static_cast<int>(level) >= level_.load(std::memory_order_relaxed);
  }

  void log(log_level level, std::string_view message, std::initializer_list<log_field> fields = {});
  void debug(std::string_view message, std::initializer_list<log_field> fields = {}) {
    log(log_level::debug, message, fields);
  }
  void info(std::string_view message, std::initializer_list<log_field> fields = {}) {
    log(log_level::info, message, fields);
  }
  void warn(std::string_view message, std::initializer_list<log_field> fields = {}) {
    log(log_level::warn, message, fields);
  }
  void error(std::string_view message, std::initializer_list<log_field> fields = {}) {
    log(log_level::error, message, fields);
  }

 private:
  std::atomic<int> level_;
  const int fd_;
  const bool journal_;  // fd_ is the journal's stream: lines carry a priority prefix
  const std::vector<const crypto::secret*> known_secrets_;
  std::mutex write_mutex_;
};

// Whether `fd` is the stream $JOURNAL_STREAM names ("device:inode", as sd-daemon(3) says);
// false when the variable is null or malformed or the descriptor is another file.
bool is_journal_stream(int fd, const char* journal_stream) noexcept;
// The sd-daemon(3) priority prefix for a level: "<3>" for error … "<7>" for debug.
std::string_view journal_prefix(log_level level) noexcept;

// Formats one line (without writing it). Exposed so tests can check the exact output.
std::string format_log_line(log_level level, std::string_view timestamp, std::string_view message,
                            std::initializer_list<log_field> fields,
                            std::span<const crypto::secret* const> known_secrets = {});

}  // namespace bankworker::service
