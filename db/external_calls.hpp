#pragma once
// The external-call log (DESIGN.md §4): one row per call to a provider or to Vault, with its
// endpoint, status, sizes, latency and how many secrets the redactor removed; never a body. Any
// room that calls out appends its calls here, in the transaction of the job that made them.

#include <cstdint>
#include <span>
#include <string>

#include <pqxx/pqxx>

#include "core/uuid.hpp"

namespace bankworker::db {

// One line of the external-call log (DESIGN.md §4).
struct external_call {
  std::string provider;  // plaid, stripe, vault
  std::string endpoint;
  long http_status = 0;  // 0: no response
  std::string error_code;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::int64_t latency_us = 0;
  std::uint32_t redactions = 0;
};
void append_external_calls(pqxx::work& tx, const core::uuid& tenant, std::span<const external_call> calls);

}  // namespace bankworker::db
