// Appending to the external-call log (db/external_calls.hpp): one statement for a job's calls.

#include "db/external_calls.hpp"

#include <optional>

#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::db {

namespace {

constexpr statement append_calls_sql{"external_calls_append",
    "INSERT INTO bankworker.external_calls (tenant_id, provider, endpoint, http_status, error_code, bytes_sent,"
    " bytes_received, latency_us, redactions)"
    " SELECT $1::uuid, u.provider, u.endpoint, u.http_status, u.error_code, u.bytes_sent, u.bytes_received,"
    "  u.latency_us, u.redactions"
    " FROM unnest($2::text[], $3::text[], $4::integer[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],"
    "  $9::integer[]) AS u(provider, endpoint, http_status, error_code, bytes_sent, bytes_received, latency_us,"
    "  redactions)"};

constexpr const char* prune_external_calls_sql =
    "SELECT bankworker.prune_external_calls(coalesce($1::timestamptz, now()) - $2::bigint * interval '1 hour',"
    " $3::integer)";

}  // namespace

void append_external_calls(pqxx::work& tx, const core::uuid& tenant, std::span<const external_call> calls) {
  if (calls.empty()) return;
  array_text providers, endpoints, statuses, codes, sent, received, latencies, redactions;
  for (const external_call& call : calls) {
    providers.add(call.provider);
    endpoints.add(call.endpoint);
    statuses.add(call.http_status > 0 ? std::optional<std::string>(std::to_string(call.http_status)) : std::nullopt);
    codes.add(call.error_code.empty() ? std::nullopt : std::optional<std::string>(call.error_code));
    sent.add(std::to_string(call.bytes_sent));
    received.add(std::to_string(call.bytes_received));
    latencies.add(std::to_string(call.latency_us));
    redactions.add(std::to_string(call.redactions));
  }
  exec_statement(tx, append_calls_sql, tenant.to_string(), providers.finish(), endpoints.finish(), statuses.finish(),
                 codes.finish(), sent.finish(), received.finish(), latencies.finish(), redactions.finish());
}

std::size_t prune_external_calls(pqxx::work& tx, std::chrono::hours retention, int batch,
                                 const std::optional<std::string>& now) {
  return tx.exec_params1(prune_external_calls_sql, now ? now->c_str() : nullptr,
                         static_cast<std::int64_t>(retention.count()), batch)[0]
      .as<std::size_t>();
}

}  // namespace bankworker::db
