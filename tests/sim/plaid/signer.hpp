#pragma once
// Webhook signing as Plaid does it: a compact JWS (JWT) in the Plaid-Verification header whose
// header is {"alg":"ES256","kid":…,"typ":"JWT"} and whose payload is
// {"iat":…,"request_body_sha256":hex(SHA-256(body))}, signed with ECDSA P-256 / SHA-256 and the
// signature written as raw r‖s (64 bytes), base64url without padding (RFC 7515 §A.3).
//
// The public half of each key is served by /webhook_verification_key/get as a JWK. Besides the
// current key the signer keeps an expired key (published with expired_at set) and a rogue key
// (never published) so tests can forge every kind of bad signature a receiver must reject.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace bankworker::sim::plaid {

// How to sign one webhook. Everything but `valid` must be rejected by a careful receiver.
enum class signing_mode {
  valid,        // current key, fresh iat
  wrong_key,    // the current kid, but signed by a key Plaid never published
  unknown_kid,  // a kid /webhook_verification_key/get does not know
  expired_key,  // the published key whose expired_at is in the past
  stale_iat,    // current key, iat ten minutes old (receivers allow five)
  alg_none,     // "alg":"none" and an empty signature
  alg_hs256,    // "alg":"HS256", HMAC keyed with the public JWK text (the classic confusion attack)
};

std::optional<signing_mode> parse_signing_mode(std::string_view text) noexcept;

class webhook_signer {
 public:
  // Keys are generated fresh (they need not follow the data seed); `now_s` dates them.
  explicit webhook_signer(std::int64_t now_s);
  ~webhook_signer();
  webhook_signer(const webhook_signer&) = delete;
  webhook_signer& operator=(const webhook_signer&) = delete;

  const std::string& current_kid() const noexcept;
  const std::string& expired_kid() const noexcept;

  // Plaid's key rotation: a new current key (returned kid) starts signing; the one it replaces
  // stays published, unexpired, so webhooks signed before the rotation still verify.
  const std::string& rotate(std::int64_t now_s);

  // The JWK object for a published kid (current, previous or expired), or nothing.
  std::optional<std::string> jwk_json(std::string_view kid) const;

  // The Plaid-Verification header value for `body`.
  std::string sign(std::string_view body, signing_mode mode, std::int64_t now_s) const;

 private:
  struct key;
  std::unique_ptr<key> current_;
  std::unique_ptr<key> previous_;  // null until the first rotate()
  std::unique_ptr<key> expired_;
  std::unique_ptr<key> rogue_;
};

// Encodings shared by the simulator (cursors, tokens) and the signer.
std::string base64url_encode(std::string_view bytes);
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);
std::string sha256_hex(std::string_view bytes);

}  // namespace bankworker::sim::plaid
