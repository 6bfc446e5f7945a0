#pragma once
// A connector's call record as a row of the external-call log (DESIGN.md §4) and as provider
// metrics, shared by the Plaid and Stripe jobs.

#include <string_view>

#include "connectors/http/client.hpp"
#include "db/external_calls.hpp"
#include "service/metrics.hpp"

namespace bankworker::service {

inline db::external_call to_external_call(std::string_view provider, const connectors::http::call_record& call) {
  db::external_call row;
  row.provider = std::string(provider);
  row.endpoint = call.endpoint;
  row.http_status = call.http_status;
  row.error_code = call.error_code;
  row.bytes_sent = call.bytes_sent;
  row.bytes_received = call.bytes_received;
  row.latency_us = call.latency.count();
  row.redactions = call.redactions;
  return row;
}

// Registers one provider call series at zero (and the endpoint's latency histogram), so that it is
// on /metrics before the first such call.
inline void register_provider_call(metrics_registry& metrics, std::string_view provider, const std::string& endpoint,
                                   std::string_view outcome) {
  metrics.add_counter("bankworker_provider_calls_total", "Calls to providers, by endpoint and outcome.",
                      {{"provider", std::string(provider)}, {"endpoint", endpoint}, {"outcome", std::string(outcome)}});
  metrics.add_histogram("bankworker_provider_call_duration_seconds", "Latency of provider calls, by endpoint.",
                        {{"provider", std::string(provider)}, {"endpoint", endpoint}});
}

// Counts one provider call by endpoint and outcome, and its latency. Endpoints carry no ids and
// outcomes come from a fixed set per provider, so the series stay bounded.
inline void count_provider_call(metrics_registry& metrics, std::string_view provider,
                                const connectors::http::call_record& call, std::string_view outcome) {
  metrics
      .add_counter("bankworker_provider_calls_total", "Calls to providers, by endpoint and outcome.",
                   {{"provider", std::string(provider)}, {"endpoint", call.endpoint}, {"outcome", std::string(outcome)}})
      .fetch_add(1, std::memory_order_relaxed);
  metrics
      .add_histogram("bankworker_provider_call_duration_seconds", "Latency of provider calls, by endpoint.",
                     {{"provider", std::string(provider)}, {"endpoint", call.endpoint}})
      .record_us(static_cast<std::uint64_t>(call.latency.count()));
}

}  // namespace bankworker::service
