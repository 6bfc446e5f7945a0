#pragma once
// Plaid's HTTP API as bankworker uses it (DESIGN.md §1.1, §1.2, §1.4): typed calls over
// connectors/http, Plaid's error object parsed and classified, and one call_record per call for
// the external-call log. Pure of policy: it never retries or sleeps (STYLE.md §3: it returns a
// typed error; the job boundary decides).
//
// Credentials travel in the JSON body (client_id, secret, access_token), which is built in guarded
// memory and zeroed after the call; never in headers, logs, errors or call records.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "connectors/http/client.hpp"
#include "connectors/plaid/sync_page.hpp"
#include "core/currency.hpp"
#include "crypto/secret.hpp"

namespace bankworker::plaid {

struct client_settings {
  std::string base_url;  // https://production.plaid.com, or the simulator on loopback
  std::chrono::milliseconds request_timeout{30'000};
  std::size_t sync_count = 500;  // /transactions/sync `count` (Plaid's maximum)
  std::string plaid_version = "2020-09-14";
};

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

// One line of the external-call log (bankworker.external_calls), without the tenant.
using call_record = connectors::http::call_record;

template <class T>
struct result {
  std::optional<T> value;  // set on success
  error failure;           // meaningful when !value
  call_record call;
  bool ok() const noexcept { return value.has_value(); }
};

struct exchange_result {
  crypto::secret access_token;
  std::string item_id;
};

// accounts, item_id, institution_id: filled by parse_accounts_page (sync_page.hpp), which reads
// accounts exactly as a sync page does.
using accounts_result = accounts_page;

struct remove_result {
  bool removed = true;  // false never happens today; kept for symmetry with Plaid's answer
};

// A webhook verification key (JWK, ES256 on P-256).
struct verification_key {
  std::string kid;
  std::string x;  // base64url
  std::string y;  // base64url
  std::int64_t created_at = 0;
  std::optional<std::int64_t> expired_at;  // seconds since the epoch; null: current key
};

class client {
 public:
  // `http` and `currencies` outlive the client. client_id and secret are kept in guarded memory.
  client(connectors::http::client& http, const core::currency_table& currencies, client_settings settings,
         crypto::secret client_id, crypto::secret api_secret);

  boost::asio::awaitable<result<exchange_result>> exchange_public_token(std::string public_token) const;
  boost::asio::awaitable<result<accounts_result>> get_accounts(const crypto::secret& access_token) const;
  // One page from `cursor` (empty: from the beginning). The page is parsed and normalised with
  // parse_sync_page; `parser` is the caller's (one per thread, reused).
  boost::asio::awaitable<result<sync_page>> sync_transactions(const crypto::secret& access_token, std::string cursor,
                                                              simdjson::ondemand::parser& parser) const;
  boost::asio::awaitable<result<remove_result>> remove_item(const crypto::secret& access_token) const;
  boost::asio::awaitable<result<verification_key>> get_webhook_verification_key(std::string key_id) const;

  const client_settings& settings() const noexcept { return settings_; }

 private:
  connectors::http::client& http_;
  const core::currency_table& currencies_;
  const client_settings settings_;
  crypto::secret client_id_;
  crypto::secret api_secret_;
};

// Classifies Plaid's error object (pure; tests and fuzzers call it directly).
error classify_error(long http_status, std::string_view body);

}  // namespace bankworker::plaid
