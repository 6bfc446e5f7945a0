#include "connectors/plaid/webhook_verify.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <simdjson.h>

#include <array>
#include <cstdint>
#include <memory>

namespace bankworker::plaid {

namespace {

constexpr std::size_t coordinate_bytes = 32;  // P-256
constexpr std::size_t signature_bytes = 2 * coordinate_bytes;
constexpr std::size_t sha256_bytes = 32;
// A JWK object is a few hundred bytes; this bounds what parse_verification_key will look at.
constexpr std::size_t jwk_json_bytes_max = 4096;

// Strict base64url (RFC 4648 §5) without padding: only the 64 letters, no '=', no whitespace, a
// length that is not 1 mod 4, and zero bits after the last byte, so every byte string has exactly
// one accepted encoding.
std::optional<std::string> decode_base64url(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    int value = -1;
    if (c >= 'A' && c <= 'Z') value = c - 'A';
    else if (c >= 'a' && c <= 'z') value = c - 'a' + 26;
    else if (c >= '0' && c <= '9') value = c - '0' + 52;
    else if (c == '-') value = 62;
    else if (c == '_') value = 63;
    if (value < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  if ((buffer & ((1U << bits) - 1)) != 0) return std::nullopt;
  return out;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::array<unsigned char, sha256_bytes>> decode_sha256_hex(std::string_view text) {
  if (text.size() != 2 * sha256_bytes) return std::nullopt;
  std::array<unsigned char, sha256_bytes> out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int high = hex_value(text[2 * i]);
    const int low = hex_value(text[2 * i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out[i] = static_cast<unsigned char>(high * 16 + low);
  }
  return out;
}

// The three parts of a compact JWS, still encoded.
struct token_parts {
  std::string_view header;
  std::string_view payload;
  std::string_view signature;
  std::string_view signing_input;  // "header.payload"
};

std::optional<token_parts> split_token(std::string_view token) {
  if (token.empty() || token.size() > limits::plaid_jwt_bytes_max) return std::nullopt;
  const std::size_t first = token.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  const std::size_t second = token.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  if (token.find('.', second + 1) != std::string_view::npos) return std::nullopt;
  token_parts parts;
  parts.header = token.substr(0, first);
  parts.payload = token.substr(first + 1, second - first - 1);
  parts.signature = token.substr(second + 1);
  parts.signing_input = token.substr(0, second);
  if (parts.header.empty() || parts.payload.empty()) return std::nullopt;
  return parts;
}

// The decoded JSON of a header or payload part, within its limit.
std::optional<std::string> decode_json_part(std::string_view encoded) {
  if (encoded.size() > (limits::plaid_jwt_part_json_bytes_max * 4 + 2) / 3) return std::nullopt;
  return decode_base64url(encoded);
}

simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser(limits::plaid_jwt_part_json_bytes_max + jwk_json_bytes_max);
  return parser;
}

// A JSON object whose members are read once each; a name that appears twice makes the whole object
// unacceptable (two `alg` members are an attack on whichever parser reads the other one).
std::optional<simdjson::dom::object> parse_object(simdjson::dom::parser& parser, std::string_view json) {
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) return std::nullopt;
  for (auto outer = object.begin(); outer != object.end(); ++outer) {
    auto inner = outer;
    for (++inner; inner != object.end(); ++inner) {
      if (outer.key() == inner.key()) return std::nullopt;
    }
  }
  return object;
}

struct header_fields {
  webhook_verdict status = webhook_verdict::malformed;
  std::string kid;
};

header_fields read_header(std::string_view encoded_header) {
  header_fields out;
  const auto json = decode_json_part(encoded_header);
  if (!json) return out;
  simdjson::dom::parser& parser = thread_parser();
  const auto header = parse_object(parser, *json);
  if (!header) return out;
  std::string_view alg;
  if ((*header)["alg"].get(alg) != simdjson::SUCCESS) return out;
  if (alg != "ES256") {
    out.status = webhook_verdict::alg_not_allowed;
    return out;
  }
  // RFC 7515 §4.1.11: a receiver must refuse critical extensions it does not understand; we
  // understand none.
  if ((*header)["crit"].error() != simdjson::NO_SUCH_FIELD) return out;
  std::string_view kid;
  if ((*header)["kid"].get(kid) != simdjson::SUCCESS) return out;
  if (kid.empty() || kid.size() > limits::plaid_jwt_kid_bytes_max) return out;
  out.kid = std::string(kid);
  out.status = webhook_verdict::verified;
  return out;
}

// OpenSSL objects owned by unique_ptr, each freed by its own function.
template <auto free_function>
struct openssl_free {
  template <class T>
  void operator()(T* object) const noexcept {
    free_function(object);
  }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_free<EVP_PKEY_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, openssl_free<EVP_PKEY_CTX_free>>;

// The public key of a JWK, validated: both coordinates exactly 32 bytes and the point on P-256.
pkey_ptr public_key_of(const verification_key& key) {
  const auto x = decode_base64url(key.x);
  const auto y = decode_base64url(key.y);
  if (!x || !y) return nullptr;
  if (x->size() != coordinate_bytes || y->size() != coordinate_bytes) return nullptr;
  // SEC 1 uncompressed point: 0x04 ‖ x ‖ y (the identity has no such encoding).
  std::array<unsigned char, 1 + 2 * coordinate_bytes> point{};
  point[0] = 0x04;
  std::copy(x->begin(), x->end(), point.begin() + 1);
  std::copy(y->begin(), y->end(), point.begin() + 1 + coordinate_bytes);

  std::unique_ptr<OSSL_PARAM_BLD, openssl_free<OSSL_PARAM_BLD_free>> builder(OSSL_PARAM_BLD_new());
  if (!builder) return nullptr;
  if (OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1) return nullptr;
  if (OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, openssl_free<OSSL_PARAM_free>> params(OSSL_PARAM_BLD_to_param(builder.get()));
  if (!params) return nullptr;
  pkey_ctx_ptr context(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!context) return nullptr;
  if (EVP_PKEY_fromdata_init(context.get()) != 1) return nullptr;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(context.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
  pkey_ptr result(raw);
  // fromdata decodes the point; the explicit check makes "on the curve, not the identity, in the
  // right subgroup" a property of this function rather than of one OpenSSL version.
  pkey_ctx_ptr check(EVP_PKEY_CTX_new_from_pkey(nullptr, result.get(), nullptr));
  if (!check) return nullptr;
  if (EVP_PKEY_public_check(check.get()) != 1) return nullptr;
  return result;
}

// ES256: the raw r‖s signature rewritten as DER (what OpenSSL verifies), then checked over the
// signing input with SHA-256.
bool verify_es256(EVP_PKEY* key, std::string_view signing_input, std::string_view raw_signature) {
  if (raw_signature.size() != signature_bytes) return false;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw_signature.data());
  std::unique_ptr<ECDSA_SIG, openssl_free<ECDSA_SIG_free>> signature(ECDSA_SIG_new());
  if (!signature) return false;
  BIGNUM* r = BN_bin2bn(bytes, coordinate_bytes, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + coordinate_bytes, coordinate_bytes, nullptr);
  if (r == nullptr || s == nullptr || ECDSA_SIG_set0(signature.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  unsigned char* der = nullptr;
  const int der_size = i2d_ECDSA_SIG(signature.get(), &der);
  if (der_size <= 0) return false;
  std::unique_ptr<EVP_MD_CTX, openssl_free<EVP_MD_CTX_free>> context(EVP_MD_CTX_new());
  const bool ok = context && EVP_DigestVerifyInit(context.get(), nullptr, EVP_sha256(), nullptr, key) == 1 &&
                  EVP_DigestVerify(context.get(), der, static_cast<std::size_t>(der_size),
                                   reinterpret_cast<const unsigned char*>(signing_input.data()),
                                   signing_input.size()) == 1;
  OPENSSL_free(der);
  return ok;
}

}  // namespace

std::string_view to_string(webhook_verdict value) noexcept {
  switch (value) {
    case webhook_verdict::verified: return "verified";
    case webhook_verdict::malformed: return "malformed";
    case webhook_verdict::alg_not_allowed: return "alg_not_allowed";
    case webhook_verdict::unknown_kid: return "unknown_kid";
    case webhook_verdict::key_expired: return "key_expired";
    case webhook_verdict::key_invalid: return "key_invalid";
    case webhook_verdict::bad_signature: return "bad_signature";
    case webhook_verdict::stale: return "stale";
    case webhook_verdict::body_mismatch: return "body_mismatch";
  }
  return "unknown";
}

webhook_kid read_webhook_kid(std::string_view token) {
  webhook_kid out;
  const auto parts = split_token(token);
  if (!parts) return out;
  header_fields header = read_header(parts->header);
  out.status = header.status;
  out.kid = std::move(header.kid);
  return out;
}

webhook_verdict verify_webhook(std::string_view token, std::string_view body, const std::optional<verification_key>& key,
                               std::chrono::system_clock::time_point now, const webhook_verify_settings& settings) {
  const auto parts = split_token(token);
  if (!parts) return webhook_verdict::malformed;
  const header_fields header = read_header(parts->header);
  if (header.status != webhook_verdict::verified) return header.status;
  // The payload is decoded (not yet trusted) so that a token which is garbage is malformed
  // whatever key it names.
  const auto payload_json = decode_json_part(parts->payload);
  if (!payload_json) return webhook_verdict::malformed;
  const auto signature = decode_base64url(parts->signature);
  if (!signature) return webhook_verdict::malformed;

  if (!key) return webhook_verdict::unknown_kid;
  if (key->kid != header.kid) return webhook_verdict::unknown_kid;
  const std::int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (key->expired_at && *key->expired_at <= now_s) return webhook_verdict::key_expired;
  const pkey_ptr public_key = public_key_of(*key);
  if (!public_key) return webhook_verdict::key_invalid;
  if (!verify_es256(public_key.get(), parts->signing_input, *signature)) return webhook_verdict::bad_signature;

  // Signed by Plaid from here on; still checked field by field.
  simdjson::dom::parser& parser = thread_parser();
  const auto payload = parse_object(parser, *payload_json);
  if (!payload) return webhook_verdict::malformed;
  std::int64_t iat = 0;
  if ((*payload)["iat"].get(iat) != simdjson::SUCCESS) return webhook_verdict::malformed;
  std::string_view body_hash_hex;
  if ((*payload)["request_body_sha256"].get(body_hash_hex) != simdjson::SUCCESS) return webhook_verdict::malformed;
  const auto expected_hash = decode_sha256_hex(body_hash_hex);
  if (!expected_hash) return webhook_verdict::malformed;

  // Both sides compared without subtraction overflow: iat is attacker-shaped until here and
  // still any int64.
  const std::int64_t max_age_s = std::min(settings.max_age, limits::plaid_webhook_age_max).count();
  const std::int64_t skew_s = std::min(settings.future_skew, limits::plaid_webhook_future_skew_max).count();
  if (iat < now_s && now_s - iat > max_age_s) return webhook_verdict::stale;
  if (iat > now_s && iat - now_s > skew_s) return webhook_verdict::stale;

  std::array<unsigned char, sha256_bytes> actual_hash{};
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), actual_hash.data());
  if (CRYPTO_memcmp(actual_hash.data(), expected_hash->data(), sha256_bytes) != 0) return webhook_verdict::body_mismatch;
  return webhook_verdict::verified;
}

std::optional<verification_key> parse_verification_key(std::string_view jwk_json) {
  if (jwk_json.size() > jwk_json_bytes_max) return std::nullopt;
  simdjson::dom::parser& parser = thread_parser();
  const auto jwk = parse_object(parser, jwk_json);
  if (!jwk) return std::nullopt;
  const std::pair<std::string_view, std::string_view> fixed[] = {{"alg", "ES256"}, {"crv", "P-256"}, {"kty", "EC"}};
  for (const auto& [name, required] : fixed) {
    std::string_view value;
    const auto field = (*jwk)[name];
    if (field.error() == simdjson::NO_SUCH_FIELD) continue;
    if (field.get(value) != simdjson::SUCCESS || value != required) return std::nullopt;
  }
  verification_key key;
  std::string_view text;
  if ((*jwk)["kid"].get(text) != simdjson::SUCCESS || text.empty() || text.size() > limits::plaid_jwt_kid_bytes_max) {
    return std::nullopt;
  }
  key.kid = std::string(text);
  if ((*jwk)["x"].get(text) != simdjson::SUCCESS) return std::nullopt;
  key.x = std::string(text);
  if ((*jwk)["y"].get(text) != simdjson::SUCCESS) return std::nullopt;
  key.y = std::string(text);
  if ((*jwk)["created_at"].get(key.created_at) != simdjson::SUCCESS) return std::nullopt;
  const auto expired = (*jwk)["expired_at"];
  if (expired.error() == simdjson::NO_SUCH_FIELD || expired.is_null()) return key;
  std::int64_t expired_at = 0;
  if (expired.get(expired_at) != simdjson::SUCCESS) return std::nullopt;
  key.expired_at = expired_at;
  return key;
}

}  // namespace bankworker::plaid
