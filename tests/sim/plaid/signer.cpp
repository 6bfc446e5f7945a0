#include "tests/sim/plaid/signer.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>

namespace bankworker::sim::plaid {

namespace {

constexpr char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char base64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string encode_with(std::string_view bytes, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) |
                            (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  const std::size_t left = bytes.size() - i;
  if (left == 1) {
    const std::uint32_t v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (left == 2) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) | (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += '=';
  }
  return out;
}

[[noreturn]] void openssl_failed(const char* what) { throw std::runtime_error(std::string("OpenSSL: ") + what); }

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;

std::string random_kid() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) openssl_failed("RAND_bytes");
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0F) | 0x40);
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3F) | 0x80);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += hex[bytes[i] >> 4];
    out += hex[bytes[i] & 15];
  }
  return out;
}

std::string coordinate(const EVP_PKEY* pkey, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) openssl_failed("EVP_PKEY_get_bn_param");
  std::string out(32, '\0');
  const int written = BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), 32);
  BN_free(bn);
  if (written != 32) openssl_failed("BN_bn2binpad");
  return out;
}

}  // namespace

struct webhook_signer::key {
  pkey_ptr pkey;
  std::string kid;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> expired_at;
  std::string jwk;  // the published JWK object

  key(std::int64_t created, std::optional<std::int64_t> expired) : kid(random_kid()), created_at(created), expired_at(expired) {
    pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!pkey) openssl_failed("EVP_PKEY_Q_keygen P-256");
    const std::string x = base64url_encode(coordinate(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_X));
    const std::string y = base64url_encode(coordinate(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_Y));
    jwk = R"({"alg":"ES256","created_at":)" + std::to_string(created_at) + R"(,"crv":"P-256","expired_at":)" +
          (expired_at ? std::to_string(*expired_at) : std::string("null")) + R"(,"kid":")" + kid +
          R"(","kty":"EC","use":"sig","x":")" + x + R"(","y":")" + y + R"("})";
  }

  // ES256 over `input`: DER from OpenSSL, rewritten as the fixed-size r‖s JWS wants.
  std::string sign_es256(std::string_view input) const {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (ctx == nullptr) openssl_failed("EVP_MD_CTX_new");
    std::string der(128, '\0');
    std::size_t der_size = der.size();
    const bool ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey.get()) == 1 &&
                    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(der.data()), &der_size,
                                   reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) openssl_failed("EVP_DigestSign");
    const unsigned char* cursor = reinterpret_cast<const unsigned char*>(der.data());
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(der_size));
    if (sig == nullptr) openssl_failed("d2i_ECDSA_SIG");
    std::string raw(64, '\0');
    const bool padded = BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), 32) == 32 &&
                        BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    if (!padded) openssl_failed("BN_bn2binpad r/s");
    return raw;
  }
};

std::optional<signing_mode> parse_signing_mode(std::string_view text) noexcept {
  if (text == "valid") return signing_mode::valid;
  if (text == "wrong_key") return signing_mode::wrong_key;
  if (text == "unknown_kid") return signing_mode::unknown_kid;
  if (text == "expired_key") return signing_mode::expired_key;
  if (text == "stale_iat") return signing_mode::stale_iat;
  if (text == "alg_none") return signing_mode::alg_none;
  if (text == "alg_hs256") return signing_mode::alg_hs256;
  return std::nullopt;
}

webhook_signer::webhook_signer(std::int64_t now_s)
    : current_(std::make_unique<key>(now_s - 86'400, std::nullopt)),
      expired_(std::make_unique<key>(now_s - 90 * 86'400, now_s - 86'400)),
      rogue_(std::make_unique<key>(now_s, std::nullopt)) {}

webhook_signer::~webhook_signer() = default;

const std::string& webhook_signer::current_kid() const noexcept { return current_->kid; }
const std::string& webhook_signer::expired_kid() const noexcept { return expired_->kid; }

const std::string& webhook_signer::rotate(std::int64_t now_s) {
  previous_ = std::move(current_);
  current_ = std::make_unique<key>(now_s, std::nullopt);
  return current_->kid;
}

std::optional<std::string> webhook_signer::jwk_json(std::string_view kid) const {
  if (kid == current_->kid) return current_->jwk;
  if (previous_ && kid == previous_->kid) return previous_->jwk;
  if (kid == expired_->kid) return expired_->jwk;
  return std::nullopt;
}

std::string webhook_signer::sign(std::string_view body, signing_mode mode, std::int64_t now_s) const {
  // Ten minutes: twice the five-minute window Plaid tells receivers to allow.
  const std::int64_t iat = mode == signing_mode::stale_iat ? now_s - 600 : now_s;
  const key& signing_key = mode == signing_mode::wrong_key ? *rogue_ : mode == signing_mode::expired_key ? *expired_ : *current_;
  std::string kid = signing_key.kid;
  if (mode == signing_mode::wrong_key) kid = current_->kid;  // claims the real key, signed by another
  if (mode == signing_mode::unknown_kid) kid = random_kid();
  const char* alg = mode == signing_mode::alg_none ? "none" : mode == signing_mode::alg_hs256 ? "HS256" : "ES256";

  const std::string header = std::string(R"({"alg":")") + alg + R"(","kid":")" + kid + R"(","typ":"JWT"})";
  const std::string payload = R"({"iat":)" + std::to_string(iat) + R"(,"request_body_sha256":")" + sha256_hex(body) + R"("})";
  const std::string signing_input = base64url_encode(header) + "." + base64url_encode(payload);

  std::string signature;
  if (mode == signing_mode::alg_none) {
    signature.clear();
  } else if (mode == signing_mode::alg_hs256) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_size = 0;
    const std::string& secret = current_->jwk;
    if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac, &mac_size) == nullptr) {
      openssl_failed("HMAC");
    }
    signature.assign(reinterpret_cast<const char*>(mac), mac_size);
  } else {
    signature = signing_key.sign_es256(signing_input);
  }
  return signing_input + "." + base64url_encode(signature);
}

std::string base64url_encode(std::string_view bytes) { return encode_with(bytes, base64url_alphabet, false); }
std::string base64_encode(std::string_view bytes) { return encode_with(bytes, base64_alphabet, true); }

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=' && i + 2 >= text.size()) {
      ++padding;
      continue;
    }
    if (v < 0 || padding > 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * SHA256_DIGEST_LENGTH);
  for (unsigned char b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

}  // namespace bankworker::sim::plaid
