#pragma once
// A connector's call record as a row of the external-call log (DESIGN.md §4), shared by the Plaid
// and Stripe jobs.

#include <string_view>

#include "connectors/http/client.hpp"
#include "db/plaid_store.hpp"

namespace bankworker::worker {

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

}  // namespace bankworker::worker
