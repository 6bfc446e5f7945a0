#pragma once
// Randomness from libsodium's CSPRNG (sodium_init must have run; main does it before any thread).

#include <cstddef>
#include <vector>

#include "core/uuid.hpp"

namespace bankworker::crypto {

core::uuid random_uuid();
// `count` version 7 uuids: the wall clock's milliseconds, then 74 random bits each
// (core::uuid::time_ordered), all from one draw of the CSPRNG (one getrandom call for the batch,
// not one per id): the ledger's entry ids.
std::vector<core::uuid> time_ordered_uuids(std::size_t count);

}  // namespace bankworker::crypto
