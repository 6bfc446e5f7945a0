#pragma once
// A budget per sender address for work a request may cause before it is authenticated (a key
// fetch from Plaid, a database lookup of a tenant's webhook secrets), so that one forger spends
// its own budget and not the one genuine senders need. Pure (the caller passes the time) and
// thread-safe; no lock is held outside its calls.
//
// Each source gets per_source_max takes per fixed window; all sources together get total_max per
// window (what the resource behind it can afford, whoever asks). IPv6 senders are grouped by
// their /64, the block one host or one customer usually holds, so an attacker cannot mint a new
// budget per address. At most sources_max sources are remembered; when full, the source whose
// window began longest ago is forgotten, which only ever hands it a fresh budget, never takes one.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace bankworker::limits {

// Sources one budget remembers: an entry is about 100 bytes, so 4,096 is under 0.5 MiB; a flood
// from more addresses only recycles entries (see above).
inline constexpr std::size_t source_budget_sources_max = 4096;

}  // namespace bankworker::limits

namespace bankworker::service {

struct source_budget_settings {
  std::size_t per_source_max = 10;
  std::size_t total_max = 100;
  std::chrono::seconds window{60};
  std::size_t sources_max = limits::source_budget_sources_max;
};

class source_budget {
 public:
  explicit source_budget(source_budget_settings settings);

  // Takes one unit for `source` (a remote address as the HTTP server reports it) at `now`; false
  // when the source's or the total budget for the current window is spent.
  bool try_take(std::string_view source, std::chrono::steady_clock::time_point now);
  // Sources remembered right now (tests and metrics).
  std::size_t sources() const;

  // `address` as the budget keys it: an IPv6 address cut to its /64, anything else as is.
  static std::string source_key(std::string_view address);

 private:
  struct window_use {
    std::chrono::steady_clock::time_point started;
    std::size_t taken = 0;
  };

  const source_budget_settings settings_;
  mutable std::mutex mutex_;
  std::map<std::string, window_use, std::less<>> sources_;
  window_use total_;
};

}  // namespace bankworker::service
