#pragma once
// /readyz's answer (DESIGN.md §6), asked of the database at most once per check_interval however
// often /readyz is called: a load balancer probing it, or a client flooding it, costs the database
// one round trip per interval, never one per request. The answer may be that old.
//
// Thread-safe: /readyz is served on every io thread. While one check is in flight, other callers
// get the previous answer at once (or "not checked yet" before the first), so a slow database
// never piles up checks either.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <boost/asio/awaitable.hpp>

namespace bankworker::worker {

class readiness {
 public:
  // Why the service is not ready, empty when it is. Must not throw (it turns its failures into a
  // reason).
  using check_fn = std::function<boost::asio::awaitable<std::string>()>;
  using clock_fn = std::function<std::chrono::steady_clock::time_point()>;

  readiness(check_fn check, std::chrono::milliseconds check_interval,
            clock_fn clock = [] { return std::chrono::steady_clock::now(); });

  // The latest answer, running the check first when the last one started check_interval ago or more.
  boost::asio::awaitable<std::string> unready_reason();
  // Checks run so far (for metrics and tests).
  std::uint64_t checks() const;

 private:
  const check_fn check_;
  const std::chrono::milliseconds check_interval_;
  const clock_fn clock_;
  mutable std::mutex mutex_;  // guards everything below; never held across co_await
  bool answered_ = false;
  bool checking_ = false;
  std::chrono::steady_clock::time_point checked_at_{};
  std::string reason_;
  std::uint64_t checks_ = 0;
};

}  // namespace bankworker::worker
