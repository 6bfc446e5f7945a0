#include "core/uuid.hpp"

#include "core/assert.hpp"

namespace bankworker::core {

namespace {

constexpr std::size_t uuid_text_bytes = 36;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_dash_position(std::size_t i) noexcept { return i == 8 || i == 13 || i == 18 || i == 23; }

}  // namespace

std::optional<uuid> uuid::parse(std::string_view text) noexcept {
  if (text.size() != uuid_text_bytes) return std::nullopt;
  uuid result;
  std::size_t out = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (is_dash_position(i)) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    const int high = hex_value(text[i]);
    const int low = hex_value(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    BW_ASSERT(out < result.bytes.size());
    result.bytes[out++] = static_cast<std::uint8_t>(high * 16 + low);
    i += 2;
  }
  BW_ASSERT(out == result.bytes.size());
  return result;
}

uuid uuid::from_random_bytes(std::array<std::uint8_t, 16> random) noexcept {
  uuid result{random};
  result.bytes[6] = static_cast<std::uint8_t>((result.bytes[6] & 0x0f) | 0x40);  // version 4
  result.bytes[8] = static_cast<std::uint8_t>((result.bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return result;
}

uuid uuid::time_ordered(std::uint64_t unix_ms, std::array<std::uint8_t, 16> random) noexcept {
  uuid result{random};
  for (int i = 0; i < 6; ++i) result.bytes[i] = static_cast<std::uint8_t>(unix_ms >> (8 * (5 - i)));
  result.bytes[6] = static_cast<std::uint8_t>((result.bytes[6] & 0x0f) | 0x70);  // version 7
  result.bytes[8] = static_cast<std::uint8_t>((result.bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return result;
}

std::string uuid::to_string() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  text.reserve(uuid_text_bytes);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text.push_back('-');
    text.push_back(digits[bytes[i] >> 4]);
    text.push_back(digits[bytes[i] & 0x0f]);
  }
  return text;
}

}  // namespace bankworker::core
