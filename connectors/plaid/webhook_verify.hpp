#pragma once
// Plaid webhook verification (DESIGN.md §2, issue #5), pure: no I/O, no clock of its own.
//
// Plaid signs each webhook with a compact JWS in the Plaid-Verification header: header
// {"alg":"ES256","kid":…,"typ":"JWT"}, payload {"iat":…,"request_body_sha256":hex}, signature
// raw r‖s (64 bytes), each part base64url without padding. The receiver fetches the JWK named by
// `kid` from /webhook_verification_key/get (cached), checks the ECDSA P-256 signature over
// "header.payload", that `iat` is recent, and that SHA-256 of the raw body equals
// request_body_sha256.
//
// Two steps, so the caller can fetch the key in between: read_webhook_kid() parses the token's
// shape and header and refuses any `alg` but ES256 before a key is looked up (an alg "none" or
// "HS256" token never costs a key fetch); verify_webhook() does the rest with the key.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>


namespace bankworker::limits {

// A Plaid-Verification token is about 400 characters today (header ~90, payload ~120, signature
// 86). Anything longer is refused as malformed before any decoding or JSON parsing.
inline constexpr std::size_t plaid_jwt_bytes_max = 2048;
// Decoded JSON of the header and of the payload, each.
inline constexpr std::size_t plaid_jwt_part_json_bytes_max = 1024;
// Plaid's kids are UUIDs (36 characters); leave room, refuse the absurd.
inline constexpr std::size_t plaid_jwt_kid_bytes_max = 128;
// How far a signed iat may be ahead of our clock, and the widest age window settings may ask for.
inline constexpr std::chrono::seconds plaid_webhook_future_skew_max{300};
inline constexpr std::chrono::seconds plaid_webhook_age_max{3600};

static_assert(plaid_jwt_part_json_bytes_max * 4 / 3 + 2 <= plaid_jwt_bytes_max,
              "a header of the largest allowed JSON must fit the token byte limit once encoded");
static_assert(plaid_jwt_kid_bytes_max < plaid_jwt_part_json_bytes_max, "a kid must fit the header");

}  // namespace bankworker::limits

namespace bankworker::plaid {

// A webhook verification key (JWK, ES256 on P-256).
struct verification_key {
  std::string kid;
  std::string x;  // base64url
  std::string y;  // base64url
  std::int64_t created_at = 0;
  std::optional<std::int64_t> expired_at;  // seconds since the epoch; null: current key
};


// The outcome of checking one webhook. Every failure answers 400 (Plaid retries a non-2xx);
// nothing is stored or enqueued for any of them.
enum class webhook_verdict {
  verified,         // signature, key, age and body all check out: act on the body
  malformed,        // the token is not three bounded base64url parts of JSON with the required
                    // fields and types (kid, iat integer, request_body_sha256 64 hex): refuse
  alg_not_allowed,  // `alg` is not exactly ES256 ("none", "HS256" key confusion, anything else):
                    // refuse before touching keys; someone is probing
  unknown_kid,      // no key for this kid (Plaid does not know it, or the key handed in is for
                    // another kid): refuse; the caller rate-limits fetching unknown kids
  key_expired,      // the key's expired_at is in the past: Plaid no longer signs with it; refuse
  key_invalid,      // the key's x/y are not 32-byte base64url coordinates of a P-256 point: the key
                    // source handed us garbage; refuse and drop that key from any cache
  bad_signature,    // the ECDSA signature does not verify under the key (or is not 64 bytes): refuse
  stale,            // iat is older than max_age, or further ahead of our clock than future_skew:
                    // a replay or a badly wrong clock; refuse (Plaid retries with a fresh token)
  body_mismatch,    // SHA-256 of the raw body differs from request_body_sha256: the body was
                    // altered (or re-serialised) after signing; refuse
};

std::string_view to_string(webhook_verdict value) noexcept;

struct webhook_verify_settings {
  std::chrono::seconds max_age{300};     // Plaid: "iat … no more than 5 minutes old"
  std::chrono::seconds future_skew{30};  // tolerated clock difference the other way
};

// What read_webhook_kid found: status is verified when `kid` is set (the signature is not
// checked yet; "verified" here means only "the header may be looked up"), otherwise malformed or
// alg_not_allowed.
struct webhook_kid {
  webhook_verdict status = webhook_verdict::malformed;
  std::string kid;
};

// Parses the token's shape and header: three base64url parts within the limits, header JSON with
// `alg` exactly "ES256" and a `kid` of 1..plaid_jwt_kid_bytes_max bytes.
webhook_kid read_webhook_kid(std::string_view token);

// Verifies the Plaid-Verification `token` for the raw `body` with `key` (the JWK fetched for the
// token's kid; nothing when none could be found). `now` is the caller's clock.
webhook_verdict verify_webhook(std::string_view token, std::string_view body, const std::optional<verification_key>& key,
                               std::chrono::system_clock::time_point now, const webhook_verify_settings& settings = {});

// Parses a JWK object as /webhook_verification_key/get returns it under "key" (kid, x, y,
// created_at, expired_at null or seconds). Nothing when a field is missing or of the wrong type,
// or when alg/crv/kty are present and not ES256/P-256/EC. The coordinates are checked later, by
// verify_webhook.
std::optional<verification_key> parse_verification_key(std::string_view jwk_json);

}  // namespace bankworker::plaid
