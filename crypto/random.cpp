#include "crypto/random.hpp"

#include <sodium.h>

namespace bankworker::crypto {

core::uuid random_uuid() {
  std::array<std::uint8_t, 16> bytes{};
  randombytes_buf(bytes.data(), bytes.size());
  return core::uuid::from_random_bytes(bytes);
}

}  // namespace bankworker::crypto
