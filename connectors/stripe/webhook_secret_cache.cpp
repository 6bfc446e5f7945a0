#include "connectors/stripe/webhook_secret_cache.hpp"

#include <algorithm>

namespace bankworker::stripe {


webhook_secret_cache::webhook_secret_cache(webhook_secret_cache_settings settings) : settings_(settings) {}

void webhook_secret_cache::lru::erase(const key& id) {
  const auto it = entries.find(id);
  if (it == entries.end()) return;
  order.erase(it->second.position);
  entries.erase(it);
}

void webhook_secret_cache::lru::put(const key& id, webhook_secrets secrets, std::chrono::steady_clock::time_point now,
                                    std::size_t max) {
  erase(id);
  while (!order.empty() && entries.size() >= max) {
    entries.erase(order.back());
    order.pop_back();
  }
  order.push_front(id);
  entries.emplace(id, entry{std::move(secrets), now, order.begin()});
}

webhook_secret_cache::lookup webhook_secret_cache::find(const core::uuid& tenant,
                                                        std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  lookup result;
  result.generation = generation_;
  if (const auto it = known_.entries.find(tenant.bytes); it != known_.entries.end()) {
    if (now - it->second.loaded_at < settings_.ttl) {
      known_.order.splice(known_.order.begin(), known_.order, it->second.position);
      result.found = state::found;
      result.secrets = it->second.secrets;
      return result;
    }
    known_.erase(tenant.bytes);
  }
  if (const auto it = unknown_.entries.find(tenant.bytes); it != unknown_.entries.end()) {
    if (now - it->second.loaded_at < settings_.unknown_ttl) {
      // Not moved to the front: a flood of lookups for one id must not keep it in while real
      // senders' entries age out; unknown entries leave in the order they came.
      result.found = state::unknown;
      return result;
    }
    unknown_.erase(tenant.bytes);
  }
  return result;
}

void webhook_secret_cache::store(const core::uuid& tenant, webhook_secrets secrets, std::uint64_t generation,
                                 std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (generation != generation_) return;
  if (secrets && !secrets->empty()) {
    unknown_.erase(tenant.bytes);
    known_.put(tenant.bytes, std::move(secrets), now,
               std::clamp<std::size_t>(settings_.tenants_max, 1, limits::stripe_secret_cache_tenants_max));
  } else {
    known_.erase(tenant.bytes);
    unknown_.put(tenant.bytes, nullptr, now,
                 std::clamp<std::size_t>(settings_.unknown_tenants_max, 1, limits::stripe_unknown_tenants_max));
  }
}

void webhook_secret_cache::forget(const core::uuid& tenant) {
  std::lock_guard lock(mutex_);
  ++generation_;
  known_.erase(tenant.bytes);
  unknown_.erase(tenant.bytes);
}

void webhook_secret_cache::forget_all() {
  std::lock_guard lock(mutex_);
  ++generation_;
  known_.entries.clear();
  known_.order.clear();
  unknown_.entries.clear();
  unknown_.order.clear();
}

std::size_t webhook_secret_cache::tenants() const {
  std::lock_guard lock(mutex_);
  return known_.entries.size();
}

std::size_t webhook_secret_cache::unknown_tenants() const {
  std::lock_guard lock(mutex_);
  return unknown_.entries.size();
}

}  // namespace bankworker::stripe
