#pragma once
// Randomness from libsodium's CSPRNG (sodium_init must have run; main does it before any thread).

#include "core/uuid.hpp"

namespace bankworker::crypto {

core::uuid random_uuid();

}  // namespace bankworker::crypto
