#pragma once
// The Stripe API calls bankworker makes (DESIGN.md §1.3, issue #6 items 6 and 8), over
// connectors/http: GET /v1/balance_transactions/{id} (fees and net of a charge, which webhooks
// never expand), GET /v1/events (missed-event recovery) and GET of a thin event's related object
// (connectors/stripe/thin_event.hpp). Typed results, Stripe's error object
// classified, one call_record per call for the external-call log. Pure of policy: it never
// retries or sleeps (STYLE.md §3); the job boundary maps error_class to a queue outcome.
//
// Credentials: the API key (the tenant's sealed restricted key, or the platform key for a
// connected account with Stripe-Account) travels as "Authorization: Bearer …" through
// http::request::bearer_token — guarded memory on our side, zeroed after the call; see
// connectors/http/client.hpp for the copy libcurl makes. It never appears in headers we build,
// logs, errors or call records.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "connectors/http/client.hpp"
#include "connectors/stripe/posting.hpp"
#include "crypto/secret.hpp"

namespace bankworker::stripe {

// Stripe's maximum page size for list calls.
inline constexpr std::size_t events_page_limit_max = 100;

struct api_settings {
  std::string base_url;  // https://api.stripe.com, or the simulator on loopback
  std::chrono::milliseconds request_timeout{20'000};
  // Pinned so the shape of what we parse does not change under us.
  std::string stripe_version = "2024-06-20";
};

enum class api_error_class {
  rate_limited,      // 429: retry after retry_after (or the queue's backoff when Stripe sent none)
  transient,         // 5xx, timeout, connection or transfer failure, client shutting down: retry with backoff
  credentials,       // 401/403: the key is wrong, revoked or lacks the permission; needs an operator
  not_found,         // 404: the object does not exist (for this key and account); permanent for this call
  permanent,         // any other 4xx: our request is wrong; permanent
  response_invalid,  // a 2xx whose body fails validation: permanent for this data, with the reason
  refused,           // the configured URL is not allowed, TLS failure, response too large: permanent
};

std::string_view to_string(api_error_class value) noexcept;

struct api_error {
  api_error_class kind = api_error_class::transient;
  long http_status = 0;  // 0: no response arrived
  std::string type;      // Stripe's error.type, when it sent its error object
  std::string code;      // Stripe's error.code
  std::string message;   // Stripe's message or our reason; cut and redacted
  std::chrono::milliseconds retry_after{0};
};

// One line of the external-call log (the caller adds provider and tenant).
using api_call_record = connectors::http::call_record;

template <class T>
struct api_result {
  std::optional<T> value;
  api_error failure;  // meaningful when !value
  api_call_record call;
  bool ok() const noexcept { return value.has_value(); }
};

// Whose data a call reads: the key, and the connected account (Stripe-Account) when the key is
// the platform's. `key` must outlive the call.
struct api_credentials {
  const crypto::secret* key = nullptr;
  std::optional<std::string> account;  // acct_…
};

// One event of a /v1/events page, with the envelope fields the inbox stores.
struct listed_event {
  std::string id;
  std::string type;
  std::int64_t created_s = 0;
  bool livemode = false;
  std::optional<std::string> account;
  std::string body;  // the event as JSON
};

struct events_page {
  std::vector<listed_event> events;  // as Stripe lists them: newest first
  bool has_more = false;
};

// Which part of the list to read (Stripe's cursor pagination; at most one cursor).
struct events_query {
  std::optional<std::string> starting_after;  // older than this id
  std::optional<std::string> ending_before;   // newer than this id (the page next to it)
  std::size_t limit = events_page_limit_max;  // 1…events_page_limit_max
};

class api_client {
 public:
  // `http` outlives the client.
  api_client(connectors::http::client& http, api_settings settings);

  boost::asio::awaitable<api_result<balance_transaction>> get_balance_transaction(api_credentials credentials,
                                                                                   std::string id) const;
  boost::asio::awaitable<api_result<events_page>> list_events(api_credentials credentials, events_query query) const;
  // GET `path` (a thin event's related_object.url, relative to the base URL; anything but
  // is_relative_api_path is refused before a request is made): the object's JSON, once its `id`
  // and `object` are `expected_id` and `expected_type` and it is at most event_bytes_max.
  boost::asio::awaitable<api_result<std::string>> get_object(api_credentials credentials, std::string path,
                                                             std::string expected_id, std::string expected_type) const;

  const api_settings& settings() const noexcept { return settings_; }

 private:
  connectors::http::client& http_;
  const api_settings settings_;
};

// Classifies a non-2xx answer and Stripe's error object (pure; tests call it directly).
api_error classify_api_error(long http_status, std::string_view body, std::string_view retry_after);

// Parses a /v1/events body (pure).
std::optional<events_page> parse_events_page(simdjson::dom::parser& parser, std::string_view json, std::string& error);

}  // namespace bankworker::stripe
