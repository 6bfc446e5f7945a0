#pragma once
// Stripe's database gauges: events received and stored but not yet posted, the oldest one's age,
// the dead-lettered ones, and the events awaiting settlement. Read in the runtime's one pipelined round trip (worker/database_gauges.hpp) through
// service::database_gauge.

#include <atomic>
#include <cstdint>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "service/metrics.hpp"
#include "service/provider.hpp"

namespace bankworker::stripe {

// Events received but not yet posted, and the oldest one's age, read by the database gauges.
class inbox_gauges {
 public:
  explicit inbox_gauges(service::metrics_registry& metrics) {
    metrics.add_gauge("bankworker_inbox_unposted_events",
                      "Stripe events received and stored but not yet posted to the ledger (nor ignored or failed).", {},
                      [this] { return events_.load(std::memory_order_relaxed); });
    metrics.add_gauge("bankworker_inbox_oldest_unposted_age_seconds",
                      "Seconds since the oldest unposted Stripe event was received (0: none).", {},
                      [this] { return oldest_s_.load(std::memory_order_relaxed); });
    metrics.add_gauge("bankworker_inbox_failed_events",
                      "Stripe events whose posting was dead-lettered (state failed): they wait for an operator "
                      "(bankworker stripe events list --failed, stripe events retry).",
                      {}, [this] { return failed_.load(std::memory_order_relaxed); });
  }

  service::database_gauge gauge() {
    return {stripe::inbox_gauges_sql, [this](const pqxx::result& rows) {
              if (rows.empty()) return;
              events_.store(rows[0][0].as<std::int64_t>(), std::memory_order_relaxed);
              oldest_s_.store(rows[0][1].as<std::int64_t>(), std::memory_order_relaxed);
              failed_.store(rows[0][2].as<std::int64_t>(), std::memory_order_relaxed);
            }};
  }

 private:
  std::atomic<std::int64_t> events_{0};
  std::atomic<std::int64_t> oldest_s_{0};
  std::atomic<std::int64_t> failed_{0};
};

// Events posted on their presentment side only, awaiting a balance transaction (migration 0043),
// and the oldest one's wait.
class settlement_gauges {
 public:
  explicit settlement_gauges(service::metrics_registry& metrics) {
    metrics.add_gauge("bankworker_stripe_awaiting_settlement_events",
                      "Stripe events posted on their presentment side only: a leg's balance transaction (fee, "
                      "settlement currency) is not known yet (bankworker stripe events list --awaiting-settlement). "
                      "Counted up to 10000: 10000 means 10000 or more.",
                      {}, [this] { return events_.load(std::memory_order_relaxed); });
    metrics.add_gauge("bankworker_stripe_awaiting_settlement_oldest_age_seconds",
                      "Seconds since the oldest Stripe event awaiting settlement was first posted (0: none).", {},
                      [this] { return oldest_s_.load(std::memory_order_relaxed); });
  }

  service::database_gauge gauge() {
    return {stripe::settlement_gauges_sql, [this](const pqxx::result& rows) {
              if (rows.empty()) return;
              events_.store(rows[0][0].as<std::int64_t>(), std::memory_order_relaxed);
              oldest_s_.store(rows[0][1].as<std::int64_t>(), std::memory_order_relaxed);
            }};
  }

 private:
  std::atomic<std::int64_t> events_{0};
  std::atomic<std::int64_t> oldest_s_{0};
};

}  // namespace bankworker::stripe
