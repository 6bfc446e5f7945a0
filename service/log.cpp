#include "service/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "core/json_text.hpp"
#include "core/limits.hpp"
#include "crypto/redact.hpp"

namespace bankworker::service {

namespace {

// One string value is cut past this; a line stops taking fields once it is this close to the limit.
constexpr std::size_t log_value_bytes_max = limits::log_line_bytes_max / 4;
constexpr std::size_t log_line_reserve_bytes = 64;
constexpr std::string_view cut_mark = "…[cut]";

// Redacts into a scratch buffer, then escapes into the line.
void append_redacted_string(std::string_view text, std::string& out, std::string& scratch,
                            std::span<const crypto::secret* const> known) {
  scratch.clear();
  crypto::redact_into(text, scratch, known);
  if (scratch.size() > log_value_bytes_max) {
    // Cut on a UTF-8 character boundary so the line stays valid text.
    std::size_t cut = log_value_bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(scratch[cut]) & 0xC0) == 0x80) --cut;
    scratch.resize(cut);
    scratch.append(cut_mark);
  }
  core::append_json_string(scratch, out);
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[64];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, static_cast<int>(millis));
  return text;
}

}  // namespace

std::optional<log_level> parse_log_level(std::string_view text) noexcept {
  if (text == "debug") return log_level::debug;
  if (text == "info") return log_level::info;
  if (text == "warn" || text == "warning") return log_level::warn;
  if (text == "error") return log_level::error;
  return std::nullopt;
}

std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "error";
}

std::string format_log_line(log_level level, std::string_view timestamp, std::string_view message,
                            std::initializer_list<log_field> fields,
                            std::span<const crypto::secret* const> known_secrets) {
  std::string line;
  std::string scratch;
  line.reserve(256);
  line.append("{\"ts\":");
  core::append_json_string(timestamp, line);
  line.append(",\"level\":");
  core::append_json_string(to_string(level), line);
  line.append(",\"msg\":");
  append_redacted_string(message, line, scratch, known_secrets);
  for (const log_field& field : fields) {
    // Room for the largest value this field could add (before escaping) and the closing marks.
    const std::size_t room_needed = field.key.size() + log_value_bytes_max + cut_mark.size() + log_line_reserve_bytes;
    if (line.size() + room_needed > limits::log_line_bytes_max) {
      line.append(",\"truncated\":true");
      break;
    }
    line.push_back(',');
    core::append_json_string(field.key, line);
    line.push_back(':');
    std::visit(
        [&](const auto& value) {
          using value_t = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<value_t, std::string_view>) {
            append_redacted_string(value, line, scratch, known_secrets);
          } else if constexpr (std::is_same_v<value_t, bool>) {
            line.append(value ? "true" : "false");
          } else if constexpr (std::is_same_v<value_t, log_field::redacted>) {
            core::append_json_string(crypto::secret::redacted_text, line);
          } else {
            line.append(std::to_string(value));
          }
        },
        field.value);
  }
  line.append("}\n");

  return line;
}

bool is_journal_stream(int fd, const char* journal_stream) noexcept {
  if (journal_stream == nullptr) return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  char tail = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &device, &inode, &tail) != 2) return false;
  struct stat status {};
  if (::fstat(fd, &status) != 0) return false;
  return static_cast<unsigned long long>(status.st_dev) == device &&
         static_cast<unsigned long long>(status.st_ino) == inode;
}

std::string_view journal_prefix(log_level level) noexcept {
  switch (level) {
    case log_level::debug: return "<7>";
    case log_level::info: return "<6>";
    case log_level::warn: return "<4>";
    case log_level::error: return "<3>";
  }
  return "<3>";
}

logger::logger(log_level level, int fd, std::vector<const crypto::secret*> known_secrets)
    : level_(static_cast<int>(level)),
      fd_(fd),
      journal_(is_journal_stream(fd, std::getenv("JOURNAL_STREAM"))),
      known_secrets_(std::move(known_secrets)) {}

void logger::log(log_level level, std::string_view message, std::initializer_list<log_field> fields) {
  if (!enabled(level)) return;
  std::string line = format_log_line(level, utc_timestamp(), message, fields, known_secrets_);
  if (journal_) line.insert(0, journal_prefix(level));
  std::lock_guard lock(write_mutex_);
  std::size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // stderr is gone; there is nowhere left to report that
    written += static_cast<std::size_t>(n);
  }
}

}  // namespace bankworker::service
