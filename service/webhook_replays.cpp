#include "service/webhook_replays.hpp"

#include <openssl/sha.h>

#include <algorithm>

namespace bankworker::service {

webhook_replays::webhook_replays(std::chrono::seconds window, std::size_t entries_max)
    : window_(window), entries_max_(std::clamp<std::size_t>(entries_max, 1, limits::plaid_webhook_replays_max)) {}

webhook_replays::digest webhook_replays::hash(std::string_view token) {
  digest out{};
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), out.data());
  return out;
}

void webhook_replays::prune(std::chrono::steady_clock::time_point now) {
  while (!order_.empty() && order_.front().first <= now) {
    const auto it = expiry_.find(order_.front().second);
    // A token released and admitted again has a later expiry of its own: keep it.
    if (it != expiry_.end() && it->second == order_.front().first) expiry_.erase(it);
    order_.pop_front();
  }
}

webhook_replays::admission webhook_replays::admit(std::string_view token, std::chrono::steady_clock::time_point now) {
  const digest key = hash(token);
  std::lock_guard lock(mutex_);
  prune(now);
  if (expiry_.contains(key)) return admission::replay;
  // order_ may hold released entries waiting to expire; it is bounded by the same limit.
  if (expiry_.size() >= entries_max_ || order_.size() >= 2 * entries_max_) return admission::full;
  const auto expires = now + window_;
  expiry_.emplace(key, expires);
  order_.emplace_back(expires, key);
  return admission::first;
}

void webhook_replays::release(std::string_view token) {
  const digest key = hash(token);
  std::lock_guard lock(mutex_);
  expiry_.erase(key);
}

std::size_t webhook_replays::size() const {
  std::lock_guard lock(mutex_);
  return expiry_.size();
}

}  // namespace bankworker::service
