#pragma once
// The outbound HTTP client (DESIGN.md §3): libcurl's multi-socket API driven by Asio, so many calls
// are in flight on one io_context without a thread each (STYLE.md §8: never curl_easy_perform on
// an io_context thread).
//
// What every call gets, whatever the caller asks: a deadline (request_timeout, connect_timeout),
// a cap on the response body (checked in the write callback: a larger body is cut off and reported
// as too_large, never buffered), TLS verification of peer and host (always on; plain http is
// accepted only for loopback literals, http://127.x.x.x and http://[::1], which the simulators
// use), connection reuse across calls to the same host, no redirects, no proxies from the
// environment, HTTP/1.1.
//
// Secrets: a request body may hold credentials (Plaid puts client_id, secret and access_token in
// the body), so the body is a crypto::secret handed to libcurl by pointer (CURLOPT_POSTFIELDS,
// never copied). A response that carries a secret (Plaid's access_token on exchange) is read into
// guarded memory when the request says so, capped at sensitive_response_bytes_max. Header values
// are copied by libcurl; put no secret in a header. An API key that must travel as
// "Authorization: Bearer …" (Stripe) goes in request::bearer_token instead: it stays in guarded
// memory on our side and is zeroed with the request. Residual risk, which no libcurl option avoids:
// libcurl strdup()s the token (CURLOPT_XOAUTH2_BEARER) and formats the Authorization line into its
// own header buffer; both are ordinary heap, freed without zeroing when the call ends (we clear the
// option at once, so libcurl's copy lives only for the duration of the call).
//
// Thread safety: perform() may be called from any thread or coroutine; the multi handle lives on
// the client's strand. The client must outlive every call, and is destroyed after the io_context
// stopped running (or once no call is in flight).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "crypto/secret.hpp"

namespace bankworker::connectors::http {

inline constexpr std::size_t sensitive_response_bytes_max = 64 * 1024;

struct client_settings {
  std::chrono::milliseconds request_timeout{10'000};  // whole call, connect included
  std::chrono::milliseconds connect_timeout{5'000};
  std::size_t response_bytes_max = 16 << 20;
  std::size_t request_bytes_max = 1 << 20;
  std::size_t connections_per_host_max = 16;
  std::size_t calls_in_flight_max = 256;  // more wait for a slot (bounded by the callers)
  std::string user_agent = "bankworker";
};

struct request {
  std::string method = "POST";
  std::string url;  // https://…, or plain http to a loopback literal only
  std::vector<std::pair<std::string, std::string>> headers;  // never a secret (see above)
  crypto::secret body;                                        // sent as is; may be empty
  crypto::secret bearer_token;  // empty: none; else sent as "Authorization: Bearer <token>" (see above)
  std::chrono::milliseconds timeout{0};                       // 0: settings.request_timeout
  bool sensitive_response = false;  // read the body into guarded memory (response::secret_body)
};

// Why a call produced no HTTP response. Every value says what the caller should do.
enum class failure {
  none,          // a response arrived (any status): look at status and body
  refused_url,   // the URL is not allowed (not https, plain http off loopback, unparsable): fix config; permanent
  timeout,       // the deadline passed (connect or whole call): retry later; a POST may have taken effect
  connect,       // DNS, refused, unreachable: retry later; nothing was sent
  tls,           // certificate or handshake failure: permanent until someone fixes certificates
  too_large,     // the response exceeded response_bytes_max (or the sensitive cap), or the request body
                 // exceeded request_bytes_max (then nothing was sent): permanent for this call
  transfer,      // the connection broke mid-response (truncated body, reset): retry; may have taken effect
  cancelled,     // the client is shutting down
};

// Whether a call that got no response should not be repeated as it is (the URL is refused, TLS
// failed, the answer was too large) rather than retried later (timeouts, connection failures,
// broken transfers, shutdown).
bool failure_is_permanent(failure value) noexcept;

// A Retry-After header in seconds, capped at `cap`; 0 when absent or an HTTP-date (not honoured:
// the queue's own backoff applies then).
std::chrono::milliseconds retry_after_delay(std::string_view header, std::chrono::seconds cap) noexcept;

// One line of the external-call log (DESIGN.md §4) as a connector reports it; the caller adds the
// provider and the tenant. Never holds a body, a header or a secret.
struct call_record {
  std::string endpoint;  // "/transactions/sync", "/v1/balance_transactions" (no ids)
  long http_status = 0;  // 0: no response
  std::string error_code;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::chrono::microseconds latency{0};
  std::uint32_t redactions = 0;  // values the redactor replaced in what was kept (the message)
};

struct response;
// The record of one call to `endpoint` from its response (status, bytes, latency); the connector
// adds the error code and redactions.
call_record call_record_of(std::string endpoint, const response& answer);

// Spare capacity past a response body whose length the server announced (simdjson's padding).
inline constexpr std::size_t body_padding_bytes = 64;

struct response {
  failure error = failure::none;
  std::string error_text;  // for failure != none: curl's reason, never a header or body
  long status = 0;
  // When !sensitive_response. Announced by Content-Length, it is allocated once with
  // body_padding_bytes to spare past its end, so a parser that reads ahead (simdjson) can work
  // on it in place instead of on a copy.
  std::string body;
  crypto::secret secret_body; // when sensitive_response
  std::uint64_t bytes_sent = 0;      // request body bytes
  std::uint64_t bytes_received = 0;  // response body bytes
  std::chrono::microseconds latency{0};
  std::string retry_after;  // the Retry-After header, if any (raw text)
};

class client {
 public:
  client(boost::asio::io_context& io, client_settings settings);
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  ~client();

  // Performs one call. Never throws for network or HTTP failures (they are in response::error and
  // status); throws std::bad_alloc and the like only.
  boost::asio::awaitable<response> perform(request call);

  // Fails every call in flight with failure::cancelled and refuses new ones. Idempotent.
  void shutdown();

  // Whether `url` may be called at all (https, or http to a loopback literal).
  static bool url_allowed(std::string_view url) noexcept;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace bankworker::connectors::http
