#pragma once
// The external-call log (DESIGN.md §4): one row per call to a provider or to Vault, with its
// endpoint, status, sizes, latency and how many secrets the redactor removed; never a body. Any
// room that calls out appends its calls here, in the transaction of the job that made them.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
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

// Deletes up to `batch` rows older than `retention` (DESIGN.md §4: 30 days) and returns how many;
// `now` is the injected clock's time as timestamptz text (tests), or empty for the database clock.
std::size_t prune_external_calls(pqxx::work& tx, std::chrono::hours retention, int batch,
                                 const std::optional<std::string>& now);

}  // namespace bankworker::db
