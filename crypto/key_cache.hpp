#pragma once
// Unwrapped tenant key-encryption keys, kept in guarded memory so that opening a secret does not
// ask the root key provider (a KMS round trip, in general) every time.
//
// Bounded twice: at most `entries_max` keys (the entry closest to expiry goes first when full)
// and each for at most `ttl` after it was unwrapped. Forgetting a tenant (its keys were destroyed
// or a version retired) drops its entries at once in this process; other processes drop theirs
// when the TTL ends, which is why the TTL is short (crypto/README.md, "What shredding cannot
// reach"). Thread-safe.
//
// Entries are shared_ptr because a key may be evicted while another thread is still opening a
// secret with it: the last user frees (and zeroes) it, and the cache never hands out a dangling
// reference.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "core/uuid.hpp"
#include "crypto/secret.hpp"

namespace bankworker::crypto {

struct key_cache_settings {
  std::size_t entries_max = 1024;
  std::chrono::seconds ttl{300};
};

class key_cache {
 public:
  using clock_function = std::function<std::chrono::steady_clock::time_point()>;

  // Throws std::invalid_argument when a setting is outside limits (kek_cache_*_max).
  explicit key_cache(key_cache_settings settings, clock_function clock = {});

  std::shared_ptr<const secret> find(const core::uuid& tenant, std::uint32_t version);
  void insert(const core::uuid& tenant, std::uint32_t version, std::shared_ptr<const secret> key);
  void forget(const core::uuid& tenant, std::uint32_t version);
  void forget_tenant(const core::uuid& tenant);
  void clear();
  std::size_t size();

  // Lookups answered from the cache, and lookups that found nothing usable (absent or expired), since
  // construction: for the key cache metrics. Monotonic; clear() and forget() do not reset them.
  std::uint64_t hits() const noexcept { return hits_.load(std::memory_order_relaxed); }
  std::uint64_t misses() const noexcept { return misses_.load(std::memory_order_relaxed); }

 private:
  using key_type = std::pair<std::array<std::uint8_t, 16>, std::uint32_t>;
  struct entry {
    std::shared_ptr<const secret> key;
    std::chrono::steady_clock::time_point expires_at;
  };

  const key_cache_settings settings_;
  const clock_function clock_;
  std::mutex mutex_;
  std::map<key_type, entry> entries_;  // guarded by mutex_
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
};

}  // namespace bankworker::crypto
