#include "queue/backoff.hpp"

#include <algorithm>

#include "core/assert.hpp"

namespace bankworker::queue {

std::chrono::milliseconds backoff_ceiling(std::uint32_t attempt, const backoff_settings& settings) noexcept {
  BW_ASSERT(settings.base.count() > 0);
  BW_ASSERT(settings.cap >= settings.base);
  const std::uint32_t doublings = attempt == 0 ? 0 : attempt - 1;
  std::int64_t ceiling = settings.base.count();
  // Doubling stops at the cap, so the shift can never overflow however large `attempt` is.
  for (std::uint32_t i = 0; i < doublings && ceiling < settings.cap.count(); ++i) ceiling *= 2;
  return std::chrono::milliseconds(std::min(ceiling, static_cast<std::int64_t>(settings.cap.count())));
}

std::chrono::milliseconds backoff_delay(std::uint32_t attempt, const backoff_settings& settings,
                                        std::mt19937_64& random) noexcept {
  const std::int64_t ceiling = backoff_ceiling(attempt, settings).count();
  std::uniform_int_distribution<std::int64_t> pick(0, ceiling);
  return std::chrono::milliseconds(pick(random));
}

}  // namespace bankworker::queue
