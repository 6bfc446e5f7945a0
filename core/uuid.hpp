#pragma once
// A 128-bit identifier (tenants, connections, secrets). Parsing is strict: the canonical
// 8-4-4-4-12 hexadecimal form, either case; anything else is not a uuid.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bankworker::core {

struct uuid {
  std::array<std::uint8_t, 16> bytes{};

  static std::optional<uuid> parse(std::string_view text) noexcept;
  // Builds a random (version 4) uuid from 16 bytes the caller took from a CSPRNG.
  static uuid from_random_bytes(std::array<std::uint8_t, 16> random) noexcept;
  // Builds a time-ordered (version 7, RFC 9562) uuid: the first 48 bits are `unix_ms`, the rest
  // (but version and variant) the caller's random bytes. Ids made later sort later, so a b-tree
  // keyed by them grows at its right edge instead of at random pages.
  static uuid time_ordered(std::uint64_t unix_ms, std::array<std::uint8_t, 16> random) noexcept;

  // Lowercase canonical form, as PostgreSQL prints it.
  std::string to_string() const;

  friend bool operator==(const uuid&, const uuid&) = default;
};

}  // namespace bankworker::core
