#pragma once
// Plaid's errors, pure (no I/O): the classes the queue needs to know, Plaid's error object parsed
// and classified (redacted), and the one mapping from an error to a job's outcome. The client
// (client.hpp) classifies every non-2xx answer here; the job handlers (jobs.hpp) map it here.

#include <chrono>
#include <optional>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "connectors/plaid/connection_status.hpp"
#include "crypto/secret.hpp"
#include "queue/job.hpp"

namespace bankworker::plaid {

// What went wrong, as the queue needs to know it (issue #5 "Errors → outcomes").
enum class error_class {
  rate_limited,          // 429 RATE_LIMIT_EXCEEDED (any code): retry after a delay, honour the limiter
  transient,             // 5xx, INTERNAL_SERVER_ERROR, PLANNED_MAINTENANCE, timeout, connection or
                         // transfer failure (a truncated body included), the client shutting down:
                         // retry with backoff
  institution_down,      // INSTITUTION_DOWN, INSTITUTION_NOT_RESPONDING: retry in longer steps
  needs_reauth,          // ITEM_LOGIN_REQUIRED, ITEM_LOCKED (and other user-fixable item errors):
                         // connection needs_reauth, no retries until re-linked
  item_gone,             // ITEM_NOT_FOUND, USER_PERMISSION_REVOKED: revoke and shred the connection
  invalid_access_token,  // INVALID_ACCESS_TOKEN: connection broken, alert, keep data
  invalid_api_keys,      // INVALID_API_KEYS (and other credential errors): stop all Plaid work, alert
  mutation_during_pagination,  // TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION: restart the loop
  cursor_not_associated,       // INVALID_FIELD "cursor not associated with access_token": clear cursor
  invalid_public_token,        // INVALID_PUBLIC_TOKEN on exchange: the user must link again
  invalid_request,       // any other 4xx (our bug or bad input): permanent
  response_invalid,      // a 2xx whose body fails validation (not JSON, missing field, bad amount):
                         // permanent for this data, with the parser's reason
  refused,               // the configured URL is not allowed, TLS failure, response too large: permanent
};

std::string_view to_string(error_class value) noexcept;

struct error {
  error_class kind = error_class::transient;
  long http_status = 0;        // 0 when no response arrived
  std::string error_type;      // Plaid's, when it sent its error object
  std::string error_code;
  std::string request_id;
  std::string message;         // Plaid's error_message or our reason; redacted, never a token
  std::chrono::milliseconds retry_after{0};  // from Retry-After, when sent
};

// Classifies Plaid's error object (pure; tests and fuzzers call it directly).
error classify_error(long http_status, std::string_view body);
// The same, adding how many values it redacted to `redactions` (for the call record). `known`:
// configuration secrets and the call's token, masked wherever they appear.
error classify_error(long http_status, std::string_view body, std::uint32_t& redactions,
                     std::span<const crypto::secret* const> known);

// The message kept in an error: cut to error_message_bytes_max, then redacted (it may quote a
// token back to us); and an identifier field cut to error_field_bytes_max.
std::string kept_error_message(std::string_view text, std::uint32_t& redactions,
                               std::span<const crypto::secret* const> known = {});
std::string short_error_field(std::string_view text);

// What Plaid said, for a job's last error and the logs: class, code, HTTP status, message
// (redacted by the client), never a token.
std::string describe(const error& failure);

// The call whose failure is being mapped: the same error means different things on each.
enum class plaid_call { exchange, sync, remove };

// The delays a mapped outcome retries after (jobs.hpp: plaid_job_settings).
struct failure_delays {
  std::chrono::milliseconds rate_limited_retry{30'000};
  std::chrono::milliseconds institution_down_retry{5 * 60'000};
  std::chrono::milliseconds credentials_pause{5 * 60'000};
};

// What a job does about a Plaid error: its outcome, and the effects that go with it.
struct failure_plan {
  queue::outcome outcome;
  std::optional<connection_status> new_status;  // sync: needs_reauth or broken (from active only)
  bool revoke = false;                          // sync: the item is gone at Plaid, enqueue plaid.revoke
  bool pause = false;                           // the API keys were refused: pause every Plaid job
  std::string connection_error;                 // the connection's last_error, when new_status or remove
};

// The one mapping from a Plaid error to a job's outcome (issue #5 "Errors → outcomes"; jobs.hpp
// lists it). `last_attempt` matters for /item/remove only: an unconfirmed removal retries until
// the job's attempts run out, then needs user action.
failure_plan plan_failure(const error& failure, plaid_call call, const failure_delays& delays,
                          bool last_attempt = false);

}  // namespace bankworker::plaid
