#include "crypto/random.hpp"

#include <sodium.h>

#include <chrono>

namespace bankworker::crypto {

core::uuid random_uuid() {
  std::array<std::uint8_t, 16> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  return core::uuid::from_random_bytes(bytes);
}

core::uuid time_ordered_uuid() {
  std::array<std::uint8_t, 16> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return core::uuid::time_ordered(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count()), bytes);
}

}  // namespace bankworker::crypto
