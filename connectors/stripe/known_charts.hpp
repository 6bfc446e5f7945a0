#pragma once
// Tenants whose chart of accounts this process has seen committed, shared by the posters and the
// stripe.post jobs. Ledger accounts are never deleted once an entry names them (the journal's
// foreign key; the worker may not delete any), so a batch of a tenant in this set skips
// ensure_chart, an INSERT ... ON CONFLICT DO NOTHING of every standard account that took about
// 5 % of the database's time under webhook_load (310 us a call, pg_stat_statements) while
// inserting nothing. A posting that runs alone still ensures the chart: that path is rare, and it
// is where a batch that failed for any reason ends up.

#include <array>
#include <cstdint>
#include <mutex>
#include <set>

#include "core/uuid.hpp"

namespace bankworker::stripe {

class known_charts {
 public:
  bool contains(const core::uuid& tenant) const {
    std::lock_guard lock(mutex_);
    return tenants_.contains(tenant.bytes);
  }
  void add(const core::uuid& tenant) {
    std::lock_guard lock(mutex_);
    tenants_.insert(tenant.bytes);
  }

 private:
  mutable std::mutex mutex_;
  std::set<std::array<std::uint8_t, 16>> tenants_;  // one entry per tenant this process posted for
};

}  // namespace bankworker::stripe
