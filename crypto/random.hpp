#pragma once
// Randomness from libsodium's CSPRNG (sodium_init must have run; main does it before any thread).

#include <cstddef>
#include <vector>

#include "core/uuid.hpp"

namespace bankworker::crypto {

core::uuid random_uuid();
// A version 7 uuid: the wall clock's milliseconds, then 74 random bits (core::uuid::time_ordered).
core::uuid time_ordered_uuid();
// `count` of them from one draw of the CSPRNG (one getrandom call instead of one per id), for
// batches: the ledger's entry ids.
std::vector<core::uuid> time_ordered_uuids(std::size_t count);

}  // namespace bankworker::crypto
