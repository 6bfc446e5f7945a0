// Plaid's errors, pure (DESIGN.md §2: the room's error mapping, free of I/O): the error object
// parsed and classified into what the queue needs to know, redacted. Tests and fuzzers call it
// directly; the client (client.hpp) calls it on every non-2xx answer.

#include "connectors/plaid/errors.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>

#include "connectors/plaid/sync_page.hpp"
#include "crypto/redact.hpp"

namespace bankworker::plaid {

namespace {

using simdjson::ondemand::json_type;

// Plaid's error_message is a sentence; anything longer is cut before it is kept.
constexpr std::size_t error_message_bytes_max = 512;
constexpr std::size_t error_field_bytes_max = 128;

std::string short_field(std::string_view text) { return std::string(text.substr(0, error_field_bytes_max)); }

bool contains_no_case(std::string_view text, std::string_view needle) {
  if (needle.size() > text.size()) return false;
  for (std::size_t i = 0; i + needle.size() <= text.size(); ++i) {
    bool same = true;
    for (std::size_t j = 0; j < needle.size() && same; ++j) {
      char c = text[i + j];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      same = c == needle[j];
    }
    if (same) return true;
  }
  return false;
}

template <std::size_t N>
bool is_one_of(std::string_view code, const std::array<std::string_view, N>& codes) {
  for (const std::string_view candidate : codes) {
    if (code == candidate) return true;
  }
  return false;
}

// ITEM_ERRORs the user resolves by re-linking through Link's update mode (Plaid's docs list them
// under "Item errors" with that remedy).
constexpr std::array<std::string_view, 12> user_fixable_item_errors = {
    "ITEM_LOGIN_REQUIRED", "ITEM_LOCKED",       "INVALID_CREDENTIALS",      "INVALID_MFA",
    "INVALID_SEND_METHOD", "INSUFFICIENT_CREDENTIALS", "INVALID_UPDATED_USERNAME", "MFA_NOT_SUPPORTED",
    "NO_ACCOUNTS",         "USER_SETUP_REQUIRED", "PASSWORD_RESET_REQUIRED",  "ACCESS_NOT_GRANTED"};

// Credential and environment errors: nothing works until an operator fixes configuration.
constexpr std::array<std::string_view, 3> credential_errors = {"INVALID_API_KEYS", "UNAUTHORIZED_ENVIRONMENT",
                                                               "UNAUTHORIZED_ROUTE_ACCESS"};

error_class class_of(long status, std::string_view type, std::string_view code, std::string_view message) {
  if (status == 429 || type == "RATE_LIMIT_EXCEEDED") return error_class::rate_limited;
  if (code == "INSTITUTION_DOWN" || code == "INSTITUTION_NOT_RESPONDING") return error_class::institution_down;
  if (code == "INTERNAL_SERVER_ERROR" || code == "PLANNED_MAINTENANCE" || type == "API_ERROR") {
    return error_class::transient;
  }
  if (code == "ITEM_NOT_FOUND" || code == "USER_PERMISSION_REVOKED") return error_class::item_gone;
  if (code == "INVALID_ACCESS_TOKEN") return error_class::invalid_access_token;
  if (is_one_of(code, credential_errors)) return error_class::invalid_api_keys;
  if (code == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION") return error_class::mutation_during_pagination;
  if (code == "INVALID_FIELD" && contains_no_case(message, "cursor") && contains_no_case(message, "not associated")) {
    return error_class::cursor_not_associated;
  }
  if (code == "INVALID_PUBLIC_TOKEN") return error_class::invalid_public_token;
  if (is_one_of(code, user_fixable_item_errors)) return error_class::needs_reauth;
  // PRODUCT_NOT_READY: Plaid is still preparing the data; asking again later works.
  if (code == "PRODUCT_NOT_READY") return error_class::transient;
  if (type == "INSTITUTION_ERROR") return error_class::institution_down;
  if (status >= 500) return error_class::transient;
  if (status >= 200 && status < 300) return error_class::response_invalid;
  return error_class::invalid_request;
}

}  // namespace

std::string kept_error_message(std::string_view text, std::uint32_t& redactions,
                               std::span<const crypto::secret* const> known) {
  if (text.size() > error_message_bytes_max) text = text.substr(0, error_message_bytes_max);
  std::string out;
  redactions += static_cast<std::uint32_t>(crypto::redact_into(text, out, known));
  return out;
}

std::string short_error_field(std::string_view text) { return short_field(text); }

std::string_view to_string(error_class value) noexcept {
  switch (value) {
    case error_class::rate_limited: return "rate_limited";
    case error_class::transient: return "transient";
    case error_class::institution_down: return "institution_down";
    case error_class::needs_reauth: return "needs_reauth";
    case error_class::item_gone: return "item_gone";
    case error_class::invalid_access_token: return "invalid_access_token";
    case error_class::invalid_api_keys: return "invalid_api_keys";
    case error_class::mutation_during_pagination: return "mutation_during_pagination";
    case error_class::cursor_not_associated: return "cursor_not_associated";
    case error_class::invalid_public_token: return "invalid_public_token";
    case error_class::invalid_request: return "invalid_request";
    case error_class::response_invalid: return "response_invalid";
    case error_class::refused: return "refused";
  }
  return "unknown";
}

error classify_error(long http_status, std::string_view body) {
  std::uint32_t redactions = 0;
  return classify_error(http_status, body, redactions, {});
}

error classify_error(long http_status, std::string_view body, std::uint32_t& redactions,
                     std::span<const crypto::secret* const> known) {
  error out;
  out.http_status = http_status;
  std::string message;
  bool plaid_error = false;
  if (body.size() <= page_body_bytes_max) {
    simdjson::ondemand::parser parser;
    try {
      const simdjson::padded_string padded(body);
      simdjson::ondemand::document document = parser.iterate(padded);
      for (auto field : document.get_object()) {
        const std::string_view key = field.unescaped_key();
        simdjson::ondemand::value value = field.value();
        if (value.type() != json_type::string) continue;  // null display_message and the like
        const std::string_view text = value.get_string();
        if (key == "error_type") {
          out.error_type = short_field(text);
          plaid_error = true;
        } else if (key == "error_code") {
          out.error_code = short_field(text);
          plaid_error = true;
        } else if (key == "error_message") {
          message = std::string(text.substr(0, error_message_bytes_max));
        } else if (key == "request_id") {
          out.request_id = short_field(text);
        }
      }
    } catch (const simdjson::simdjson_error&) {
      plaid_error = false;
    }
  }
  if (!plaid_error) {
    out.error_type.clear();
    out.error_code.clear();
    message = "HTTP " + std::to_string(http_status) + " without Plaid's error object";
  }
  out.kind = class_of(http_status, out.error_type, out.error_code, message);
  out.message = kept_error_message(message, redactions, known);
  // The identifiers are Plaid's enumerations; redacting them too costs nothing and keeps a
  // hostile or broken server from smuggling a token into a log through them.
  std::string type, code;
  redactions += static_cast<std::uint32_t>(crypto::redact_into(out.error_type, type, known));
  redactions += static_cast<std::uint32_t>(crypto::redact_into(out.error_code, code, known));
  out.error_type = std::move(type);
  out.error_code = std::move(code);
  return out;
}

std::string describe(const error& failure) {
  std::string text(to_string(failure.kind));
  if (!failure.error_code.empty()) text += " " + failure.error_code;
  if (failure.http_status > 0) text += " (HTTP " + std::to_string(failure.http_status) + ")";
  if (!failure.message.empty()) text += ": " + failure.message;
  return text;
}

namespace {

// The retry delay an error class asks for on any call; zero: the queue's capped backoff.
std::chrono::milliseconds retry_delay(const error& failure, const failure_delays& delays) {
  switch (failure.kind) {
    case error_class::rate_limited: return std::max(failure.retry_after, delays.rate_limited_retry);
    case error_class::institution_down: return delays.institution_down_retry;
    case error_class::invalid_api_keys: return delays.credentials_pause;
    default: return std::chrono::milliseconds{0};
  }
}

// /item/remove not confirmed: the token stays sealed and the job retries until its last attempt.
failure_plan plan_remove_failure(const error& failure, const failure_delays& delays, bool last_attempt) {
  const std::string reason = "Plaid has not confirmed /item/remove: " + describe(failure);
  failure_plan plan;
  plan.pause = failure.kind == error_class::invalid_api_keys;
  plan.connection_error = reason;
  plan.outcome = last_attempt ? queue::outcome::needs_user_action(
                                    reason + "; the connection stays revoking with its token sealed: run"
                                             " `connections revoke` again once Plaid accepts the removal")
                              : queue::outcome::retry(reason + "; the token stays sealed until Plaid confirms",
                                                      retry_delay(failure, delays));
  return plan;
}

}  // namespace

failure_plan plan_failure(const error& failure, plaid_call call, const failure_delays& delays, bool last_attempt) {
  if (call == plaid_call::remove) return plan_remove_failure(failure, delays, last_attempt);
  const std::string reason = describe(failure);
  const bool sync = call == plaid_call::sync;
  failure_plan plan;
  plan.outcome = queue::outcome::failed_permanently(reason);
  plan.connection_error = reason;
  switch (failure.kind) {
    case error_class::rate_limited:
    case error_class::institution_down:
    case error_class::transient: plan.outcome = queue::outcome::retry(reason, retry_delay(failure, delays)); break;
    case error_class::invalid_api_keys:
      plan.pause = true;
      plan.outcome = queue::outcome::retry(reason, retry_delay(failure, delays));
      break;
    case error_class::mutation_during_pagination:  // restarts exhausted: later, from the stored cursor
      if (sync) plan.outcome = queue::outcome::retry(reason);
      break;
    case error_class::invalid_public_token:
      if (!sync) plan.outcome = queue::outcome::needs_user_action(reason + "; the user must link the bank again");
      break;
    case error_class::needs_reauth:
      if (!sync) break;
      plan.new_status = connection_status::needs_reauth;
      plan.outcome = queue::outcome::needs_user_action(reason + "; the user must re-authenticate in Link");
      break;
    case error_class::item_gone:
      if (!sync) break;
      plan.revoke = true;
      plan.outcome = queue::outcome::failed_permanently(reason + "; the connection is being revoked");
      break;
    case error_class::invalid_access_token:
      if (sync) plan.new_status = connection_status::broken;
      break;
    case error_class::cursor_not_associated:
    case error_class::invalid_request:
    case error_class::response_invalid:
    case error_class::refused: break;
  }
  return plan;
}

}  // namespace bankworker::plaid
