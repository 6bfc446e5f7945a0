#pragma once
// Accepted Plaid webhook tokens, remembered for as long as the same token could still pass the
// age check (issue #23), so a captured delivery replayed inside its window is refused. Pure (the
// caller passes the time) and thread-safe. Only tokens that verified are remembered, so a forger
// cannot fill it; it holds at most entries_max hashes and, when full, refuses to remember more
// (the caller answers 503 and Plaid retries) rather than forget one that could still be replayed.
//
// One worker's memory: a replay sent to another worker of the same deployment is not caught here;
// the effects a webhook has are idempotent, so such a replay changes nothing either.

#include <array>
#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <string_view>

namespace bankworker::limits {

// Token hashes remembered at once: 48 bytes of data each and a map node, under 8 MiB in all.
// Filled only by verified webhooks, whose window is 330 s (iat age 300 s plus 30 s of skew), so
// this holds about 200 accepted webhooks a second per worker, far above what Plaid sends.
inline constexpr std::size_t plaid_webhook_replays_max = 65'536;

}  // namespace bankworker::limits

namespace bankworker::service {

class webhook_replays {
 public:
  // `window`: how long a token stays acceptable after we first accept it.
  explicit webhook_replays(std::chrono::seconds window, std::size_t entries_max = limits::plaid_webhook_replays_max);

  enum class admission {
    first,    // not seen in the window: now remembered, act on it
    replay,   // accepted before and still inside its window: refuse (409)
    full,     // entries_max reached: refuse for now (503), nothing remembered
  };
  admission admit(std::string_view token, std::chrono::steady_clock::time_point now);
  // Forgets `token` (its effect did not commit, so it was not accepted after all).
  void release(std::string_view token);
  std::size_t size() const;

 private:
  using digest = std::array<unsigned char, 32>;
  static digest hash(std::string_view token);
  void prune(std::chrono::steady_clock::time_point now);

  const std::chrono::seconds window_;
  const std::size_t entries_max_;
  mutable std::mutex mutex_;
  std::map<digest, std::chrono::steady_clock::time_point> expiry_;
  // Entries in the order they expire (admission order: the window is the same for all).
  std::deque<std::pair<std::chrono::steady_clock::time_point, digest>> order_;
};

}  // namespace bankworker::service
