#pragma once
// Stripe-Signature parsing and verification (DESIGN.md §1.3): pure, no I/O, no clock of its own.
//
// Stripe signs every webhook delivery with HMAC-SHA256, keyed with the endpoint's whole signing
// secret ("whsec_…", prefix included, exactly as Stripe's own libraries use it), over
// "<t>.<raw body>", and sends "Stripe-Signature: t=<unix seconds>,v1=<64 hex>[,v1=…][,v0=…]".
// During a secret roll Stripe sends one v1 per active secret, and we hold several secrets per
// endpoint; the request is authentic when any v1 matches any of our secrets.
//
// Everything here is a function of its arguments (header, body, secrets, the current time,
// settings), so it can be fuzzed as is. Bad input is a result, never an exception or an assertion.
// Where Stripe's libraries disagree about a header, connectors/stripe/README.md says what we do
// and why.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/limits.hpp"
#include "crypto/secret.hpp"

namespace bankworker::stripe {

struct signature_settings {
  // How old a signed timestamp may be: Stripe's documented default, also its libraries'.
  std::chrono::seconds tolerance{300};
  // How far ahead of our clock a signed timestamp may be, for clock skew between Stripe and us.
  // Stripe's libraries accept any future timestamp; we bound it so the replay window is bounded
  // on both sides.
  std::chrono::seconds future_skew{60};
};

// Why `settings` cannot be used (naming the limit), or an empty view when they can. The wiring
// calls this once at start-up; verify_signature itself clamps out-of-range values into
// [0, limit], so a bad setting narrows the window and never opens it.
std::string_view check_settings(const signature_settings& settings) noexcept;

// Whether `text` has the shape of a Stripe webhook signing secret: "whsec_" and at least one more
// byte, at most limits::stripe_webhook_secret_bytes_max bytes, printable ASCII with no
// whitespace. For `bankworker stripe secret add`: a pasted secret with a trailing newline or
// space would never verify anything, and Stripe's libraries cannot tell the user why.
bool looks_like_webhook_secret(std::string_view text) noexcept;

enum class signature_status {
  // One v1 signature matches one of the endpoint's secrets and the timestamp is within the
  // window. The caller stores the event (and answers 2xx only once it is durable).
  verified,
  // The header is empty, longer than limits::stripe_signature_header_bytes_max, holds
  // whitespace or a control byte, an element that is not key=value, no t, a t that appears
  // twice or is not a canonical decimal number, or more v1 values than
  // limits::stripe_signatures_max. Stripe never sends such a header: answer 400 and store
  // nothing (a proxy rewrote the header, or the request is forged).
  malformed_header,
  // The header parses but carries no v1 element (only v0 or unknown schemes). Answer 400 and
  // store nothing; if it persists, Stripe is signing with a scheme we do not know yet.
  no_v1_signature,
  // Some v1 matches one of our secrets (the request is authentic) but its timestamp is older
  // than the tolerance or further ahead than the future skew: a replay, a delivery delayed in
  // transit, or a wrong clock on our side. Answer 400 and store nothing; Stripe retries with a
  // fresh timestamp, and missed-event recovery fetches the event otherwise. Alert if frequent:
  // it usually means our clock is off.
  timestamp_outside_tolerance,
  // No v1 matches any of our secrets (or the endpoint has none, or every v1 is not 64 lowercase
  // hex digits): a forgery, a body altered on the way, a body re-serialised before
  // verification, or a secret that was rolled on Stripe's side and not added here. Answer 400
  // and store nothing.
  no_matching_signature,
};

// What verify_signature found.
struct signature_check {
  signature_status status = signature_status::malformed_header;
  // When verified: the index in `secrets` of the first secret that matched (rotation
  // bookkeeping: once only the new secret matches, the old one can be removed).
  std::size_t secret_index = 0;
  // The header's t when it parsed (0 otherwise), for logs.
  std::int64_t timestamp_s = 0;
  // A fixed sentence saying which rule or limit decided; never contains input bytes, so it is
  // safe to log as is.
  std::string_view reason;

  bool verified() const noexcept { return status == signature_status::verified; }
};

// Verifies a webhook delivery. `header` is the Stripe-Signature value as received (the HTTP
// layer has already dropped surrounding whitespace), `body` the raw body bytes exactly as
// received, `secrets` the endpoint's active secrets (at most limits::stripe_endpoint_secrets_max;
// an empty secret never matches anything), `now` our clock. The signature is checked before the
// timestamp, so timestamp_outside_tolerance is only ever reported for authentic requests.
//
// Never throws on any header or body; throws std::bad_alloc or std::runtime_error only when
// OpenSSL cannot allocate a digest context or has no SHA-256 (a broken installation).
signature_check verify_signature(std::string_view header, std::string_view body,
                                 std::span<const crypto::secret> secrets,
                                 std::chrono::system_clock::time_point now,
                                 const signature_settings& settings = {});

// The checks that need no secret, for the webhook route to run before any cache lookup or
// database work: the header parses, holds at least one v1 of 64 lowercase hex digits, and its t
// is inside the window. A header failing them can verify under no secret, so the route answers
// 400 at once. The status is verify_signature's for the same failure, except that a stale or
// too-far-ahead t is reported as timestamp_outside_tolerance here whether or not the request is
// authentic (nothing is known about that yet). `verified` means only "worth looking up secrets
// for"; verify_signature must still run. Never throws.
signature_check precheck_signature(std::string_view header, std::chrono::system_clock::time_point now,
                                   const signature_settings& settings = {}) noexcept;

// A parsed Stripe-Signature header. Exposed for tests and fuzzing; verify_signature uses it.
// timestamp_text points into the parsed header: valid only while that string lives.
struct signature_header {
  // The t value exactly as sent: canonical decimal digits, which is also the text Stripe signed.
  std::string_view timestamp_text;
  std::int64_t timestamp_s = 0;
  // The v1 values that are 64 lowercase hex digits, decoded. Other v1 values can never match
  // and are not kept (Stripe's libraries likewise ignore a "v1=bad_signature" next to a good one).
  std::array<std::array<unsigned char, 32>, limits::stripe_signatures_max> signatures{};
  std::size_t signature_count = 0;
  // Every v1 element, well-formed or not.
  std::size_t v1_count = 0;
};

struct header_parse {
  // Empty when the header parsed; otherwise malformed_header or no_v1_signature.
  std::optional<signature_status> failure;
  std::string_view reason;
  signature_header header;
};

header_parse parse_signature_header(std::string_view header) noexcept;

}  // namespace bankworker::stripe
