#include "worker/readiness.hpp"

#include <exception>
#include <utility>

#include "core/assert.hpp"

namespace bankworker::worker {

readiness::readiness(check_fn check, std::chrono::milliseconds check_interval, clock_fn clock)
    : check_(std::move(check)), check_interval_(check_interval), clock_(std::move(clock)) {
  BW_ASSERT(check_ != nullptr);
  BW_ASSERT(check_interval_.count() > 0);
}

boost::asio::awaitable<std::string> readiness::unready_reason() {
  {
    std::lock_guard lock(mutex_);
    const auto now = clock_();
    const bool fresh = answered_ && now - checked_at_ < check_interval_;
    if (fresh || checking_) co_return answered_ ? reason_ : std::string("readiness not checked yet");
    checking_ = true;
    checked_at_ = now;  // from the start, so checks start at most once per interval
    ++checks_;
  }
  std::string reason;
  try {
    reason = co_await check_();
  } catch (const std::exception&) {
    reason = "readiness check failed";  // check_fn turns its failures into reasons; this is a bug
  }
  std::lock_guard lock(mutex_);
  reason_ = reason;
  answered_ = true;
  checking_ = false;
  co_return reason;
}

std::uint64_t readiness::checks() const {
  std::lock_guard lock(mutex_);
  return checks_;
}

}  // namespace bankworker::worker
