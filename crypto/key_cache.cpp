#include "crypto/key_cache.hpp"

#include <stdexcept>

#include "core/assert.hpp"
#include "core/limits.hpp"

namespace bankworker::crypto {

key_cache::key_cache(key_cache_settings settings, clock_function clock)
    : settings_(settings), clock_(clock ? std::move(clock) : clock_function([] { return std::chrono::steady_clock::now(); })) {
  if (settings_.entries_max == 0 || settings_.entries_max > limits::kek_cache_entries_max) {
    throw std::invalid_argument("key cache entries must be 1..kek_cache_entries_max");
  }
  if (settings_.ttl.count() <= 0 || settings_.ttl > limits::kek_cache_ttl_max) {
    throw std::invalid_argument("key cache ttl must be positive and at most kek_cache_ttl_max");
  }
}

std::shared_ptr<const secret> key_cache::find(const core::uuid& tenant, std::uint32_t version) {
  const auto now = clock_();
  std::shared_ptr<const secret> expired;  // released outside the lock
  std::lock_guard lock(mutex_);
  const auto it = entries_.find({tenant.bytes, version});
  if (it == entries_.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (it->second.expires_at <= now) {
    expired = std::move(it->second.key);
    entries_.erase(it);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second.key;
}

void key_cache::insert(const core::uuid& tenant, std::uint32_t version, std::shared_ptr<const secret> key) {
  BW_ASSERT(key != nullptr);
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  if (entries_.size() >= settings_.entries_max && !entries_.contains({tenant.bytes, version})) {
    // Drop what has expired; if that frees nothing, drop the entry closest to expiry.
    std::erase_if(entries_, [&](const auto& item) { return item.second.expires_at <= now; });
    if (entries_.size() >= settings_.entries_max) {
      auto oldest = entries_.begin();
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->second.expires_at < oldest->second.expires_at) oldest = it;
      }
      entries_.erase(oldest);
    }
  }
  entries_[{tenant.bytes, version}] = entry{std::move(key), now + settings_.ttl};
  BW_ASSERT(entries_.size() <= settings_.entries_max);
}

void key_cache::forget(const core::uuid& tenant, std::uint32_t version) {
  std::lock_guard lock(mutex_);
  entries_.erase({tenant.bytes, version});
}

void key_cache::forget_tenant(const core::uuid& tenant) {
  std::lock_guard lock(mutex_);
  std::erase_if(entries_, [&](const auto& item) { return item.first.first == tenant.bytes; });
}

void key_cache::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

std::size_t key_cache::size() {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace bankworker::crypto
