#include "core/json_text.hpp"

namespace bankworker::core {

namespace {

// The escape for `c`, or empty when it is copied as it is; \u00XX forms are handled by the callers.
std::string_view short_escape(char c) noexcept {
  switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: return {};
  }
}

bool needs_unicode_escape(char c) noexcept { return static_cast<unsigned char>(c) < 0x20; }

}  // namespace

std::size_t json_string_bytes(std::string_view text) noexcept {
  std::size_t bytes = 2;
  for (const char c : text) {
    const std::string_view escape = short_escape(c);
    if (!escape.empty()) {
      bytes += escape.size();
    } else if (needs_unicode_escape(c)) {
      bytes += 6;
    } else {
      bytes += 1;
    }
  }
  return bytes;
}

char* write_json_string(std::string_view text, char* out) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  *out++ = '"';
  for (const char c : text) {
    const std::string_view escape = short_escape(c);
    if (!escape.empty()) {
      for (const char e : escape) *out++ = e;
    } else if (needs_unicode_escape(c)) {
      for (const char e : std::string_view("\\u00")) *out++ = e;
      *out++ = hex[(c >> 4) & 0xf];
      *out++ = hex[c & 0xf];
    } else {
      *out++ = c;
    }
  }
  *out++ = '"';
  return out;
}

void append_json_string(std::string_view text, std::string& out) {
  const std::size_t start = out.size();
  out.resize(start + json_string_bytes(text));
  write_json_string(text, out.data() + start);
}

}  // namespace bankworker::core
