#pragma once
// The tenant → opened Stripe webhook secrets cache of POST /webhooks/stripe/{tenant} (issue #23):
// bounded, least recently used first out, with a separate bounded negative cache for tenants that
// do not exist or have no endpoint. Pure (the caller passes the time) and thread-safe; nothing
// here touches the database.
//
// A removed or added secret reaches every worker as a NOTIFY (migration 0027) and forget() drops
// that tenant at once; ttl only bounds how long a lost notification can matter. A load that began
// before a forget() is not stored (the generation check), so a lookup racing a removal cannot put
// the removed secret back.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/limits.hpp"
#include "core/uuid.hpp"
#include "crypto/secret.hpp"

namespace bankworker::limits {

// Tenants whose opened secrets one worker holds. Each secret lives in its own sodium_malloc
// region (one locked data page and guard pages), so 1,024 tenants at one secret each lock 4 MiB,
// and at the worst (stripe_endpoint_secrets_max each) 32 MiB; beyond the busiest tenants a worker
// serves, an evicted tenant costs one database transaction on its next webhook.
inline constexpr std::size_t stripe_secret_cache_tenants_max = 1024;
// Tenant ids remembered as unknown or without an endpoint: about 100 bytes each, so 4,096 stay
// under 0.5 MiB. Enough for every retrying sender of deleted tenants; random ids only recycle it
// (the lookup budget, not this cache, bounds what they cost the database).
inline constexpr std::size_t stripe_unknown_tenants_max = 4096;

}  // namespace bankworker::limits

namespace bankworker::stripe {


struct webhook_secret_cache_settings {
  std::size_t tenants_max = limits::stripe_secret_cache_tenants_max;
  std::size_t unknown_tenants_max = limits::stripe_unknown_tenants_max;
  // How long an entry is trusted without a notification: the NOTIFY makes changes take effect at
  // once; this only bounds the harm of one lost while the listen connection was down (the
  // listener's reconnect also drops everything).
  std::chrono::seconds ttl{300};
  std::chrono::seconds unknown_ttl{60};
};

using webhook_secrets = std::shared_ptr<const std::vector<crypto::secret>>;

class webhook_secret_cache {
 public:
  explicit webhook_secret_cache(webhook_secret_cache_settings settings);

  enum class state {
    miss,     // not cached (or expired): load it, then store() with `generation`
    found,    // `secrets` holds the endpoint's active secrets
    unknown,  // the tenant does not exist or has no endpoint (answer 404)
  };
  struct lookup {
    state found = state::miss;
    webhook_secrets secrets;
    std::uint64_t generation = 0;
  };
  lookup find(const core::uuid& tenant, std::chrono::steady_clock::time_point now);
  // Stores what a load begun at `generation` found (`secrets` null or empty: unknown), unless
  // something was forgotten since.
  void store(const core::uuid& tenant, webhook_secrets secrets, std::uint64_t generation,
             std::chrono::steady_clock::time_point now);
  void forget(const core::uuid& tenant);
  void forget_all();

  std::size_t tenants() const;
  std::size_t unknown_tenants() const;

 private:
  using key = std::array<std::uint8_t, 16>;
  struct entry {
    webhook_secrets secrets;  // null in the unknown list
    std::chrono::steady_clock::time_point loaded_at;
    std::list<key>::iterator position;  // in its list, most recently used first
  };
  struct lru {
    std::map<key, entry> entries;
    std::list<key> order;
    void erase(const key& id);
    void put(const key& id, webhook_secrets secrets, std::chrono::steady_clock::time_point now, std::size_t max);
  };

  const webhook_secret_cache_settings settings_;
  mutable std::mutex mutex_;
  lru known_;
  lru unknown_;
  std::uint64_t generation_ = 0;
};

}  // namespace bankworker::stripe
