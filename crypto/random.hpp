#pragma once
// Randomness from libsodium's CSPRNG (sodium_init must have run; main does it before any thread).

#include "core/uuid.hpp"

namespace bankworker::crypto {

core::uuid random_uuid();
// A version 7 uuid: the wall clock's milliseconds, then 74 random bits (core::uuid::time_ordered).
core::uuid time_ordered_uuid();

}  // namespace bankworker::crypto
