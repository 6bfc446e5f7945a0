#pragma once
// Retry delays: capped exponential backoff with full jitter. Pure logic (no clock, no I/O), so
// tests drive it with a seeded generator and check every attempt of a schedule.

#include <chrono>
#include <cstdint>
#include <random>

#include "core/limits.hpp"

namespace bankworker::queue {

struct backoff_settings {
  // The ceiling of the first retry's delay; each further attempt doubles it, up to `cap`.
  std::chrono::milliseconds base{1'000};
  std::chrono::milliseconds cap{limits::job_backoff_max};
};

// The ceiling for `attempt` (1 = the attempt that just failed was the first): min(cap, base·2^(attempt-1)).
std::chrono::milliseconds backoff_ceiling(std::uint32_t attempt, const backoff_settings& settings) noexcept;

// Full jitter: a delay drawn uniformly from [0, backoff_ceiling(attempt)], so that many jobs failing
// together (a provider outage) do not retry together.
std::chrono::milliseconds backoff_delay(std::uint32_t attempt, const backoff_settings& settings,
                                        std::mt19937_64& random) noexcept;

}  // namespace bankworker::queue
