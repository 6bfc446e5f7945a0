#include "crypto/random.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <chrono>

namespace bankworker::crypto {

core::uuid random_uuid() {
  std::array<std::uint8_t, 16> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  return core::uuid::from_random_bytes(bytes);
}

std::vector<core::uuid> time_ordered_uuids(std::size_t count) {
  if (count == 0) return {};
  constexpr std::size_t id_bytes = 16;
  std::vector<std::uint8_t> random(count * id_bytes);
  randombytes_buf(random.data(), random.size());
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto unix_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
  std::vector<core::uuid> ids;
  ids.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::array<std::uint8_t, id_bytes> bytes{};
    std::copy_n(random.begin() + static_cast<std::ptrdiff_t>(i * id_bytes), id_bytes, bytes.begin());
    ids.push_back(core::uuid::time_ordered(unix_ms, bytes));
  }
  return ids;
}

}  // namespace bankworker::crypto
