#pragma once
// Plaid's database gauges: connections by status, and the revocations still waiting for Plaid to
// confirm /item/remove with the oldest one's age. Read in the runtime's one pipelined round trip
// (worker/database_gauges.hpp) through service::database_gauge.

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/plaid/connection_status.hpp"
#include "service/metrics.hpp"
#include "service/provider.hpp"

namespace bankworker::plaid {

inline constexpr const char* connection_gauges_sql = "SELECT status, connections FROM bankworker.connection_gauges()";
inline constexpr const char* revoking_gauges_sql =
    "SELECT connections, oldest_s FROM bankworker.revoking_connections(NULL::timestamptz)";

// Connections by status, and the revocations still waiting for Plaid, read by the database gauges.
class connection_gauges {
 public:
  explicit connection_gauges(service::metrics_registry& metrics) : metrics_(metrics) {
    // Every status from start-up (connection_status.hpp).
    for (const connection_status status : connection_statuses) series(std::string(to_string(status)));
    // A revocation waits in 'revoking', token sealed, until Plaid confirms the removal; the alert
    // in contrib/prometheus/alerts.yml fires on the age of the oldest one.
    metrics_.add_gauge("bankworker_plaid_connections_revoking",
                       "Connections waiting for Plaid to confirm /item/remove (token still sealed).", {},
                       [this] { return revoking_.load(std::memory_order_relaxed); });
    metrics_.add_gauge("bankworker_plaid_revoking_oldest_age_seconds",
                       "Seconds since the oldest connection still revoking entered that state (0: none).", {},
                       [this] { return revoking_oldest_s_.load(std::memory_order_relaxed); });
  }

  std::vector<service::database_gauge> gauges() {
    return {{connection_gauges_sql,
             [this](const pqxx::result& rows) {
               for (const pqxx::row& row : rows) {
                 if (auto* value = series(row[0].as<std::string>())) {
                   value->store(row[1].as<std::int64_t>(), std::memory_order_relaxed);
                 }
               }
             }},
            {revoking_gauges_sql, [this](const pqxx::result& rows) {
               if (rows.empty()) return;
               revoking_.store(rows[0][0].as<std::int64_t>(), std::memory_order_relaxed);
               revoking_oldest_s_.store(rows[0][1].as<std::int64_t>(), std::memory_order_relaxed);
             }}};
  }

 private:
  std::atomic<std::int64_t>* series(const std::string& status) {
    const auto found = statuses_.find(status);
    if (found != statuses_.end()) return found->second;
    // The statuses come from a check constraint; the cap only guards against a schema gone wrong.
    if (statuses_.size() >= 2 * connection_statuses.size()) return nullptr;
    std::atomic<std::int64_t>* value = &storage_.emplace_back(0);
    metrics_.add_gauge("bankworker_connections",
                       "Plaid connections by status, across tenants, read from the database every few seconds.",
                       {{"status", status}}, [value] { return value->load(std::memory_order_relaxed); });
    return statuses_.emplace(status, value).first->second;
  }

  service::metrics_registry& metrics_;
  std::map<std::string, std::atomic<std::int64_t>*, std::less<>> statuses_;
  std::deque<std::atomic<std::int64_t>> storage_;
  std::atomic<std::int64_t> revoking_{0};
  std::atomic<std::int64_t> revoking_oldest_s_{0};
};

}  // namespace bankworker::plaid
