// Plaid webhook verification against tokens made by the simulator's signer (the same code that
// signs the simulator's deliveries): valid tokens pass, and every forgery the signer knows, plus
// hand-built malformed tokens, fails with its own verdict.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "connectors/plaid/webhook_verify.hpp"
#include "tests/sim/plaid/signer.hpp"

using namespace bankworker;
using plaid::webhook_verdict;
namespace plaid_sim = bankworker::sim::plaid;

namespace {

constexpr std::int64_t now_s = 1'700'000'000;
const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(now_s));

// Pretty-printed as Plaid sends it: the hash covers these exact bytes.
const std::string body =
    "{\n  \"environment\": \"sandbox\",\n  \"item_id\": \"item-1\",\n  \"webhook_code\": \"SYNC_UPDATES_AVAILABLE\",\n"
    "  \"webhook_type\": \"TRANSACTIONS\"\n}";

plaid::verification_key key_for(const plaid_sim::webhook_signer& signer, const std::string& kid) {
  const auto jwk = signer.jwk_json(kid);
  REQUIRE(jwk);
  const auto key = plaid::parse_verification_key(*jwk);
  REQUIRE(key);
  return *key;
}

// A token with the given header and payload JSON and signature bytes, encoded as a JWS.
std::string token_of(std::string_view header, std::string_view payload, std::string_view signature = "sig") {
  return plaid_sim::base64url_encode(header) + "." + plaid_sim::base64url_encode(payload) + "." + plaid_sim::base64url_encode(signature);
}

webhook_verdict verify(const std::string& token, const std::optional<plaid::verification_key>& key,
                       std::string_view delivered = body) {
  return plaid::verify_webhook(token, delivered, key, now);
}

}  // namespace

TEST_CASE("a token Plaid signed for this body verifies, and its kid can be read first", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const std::string token = signer.sign(body, plaid_sim::signing_mode::valid, now_s);
  const plaid::webhook_kid kid = plaid::read_webhook_kid(token);
  CHECK(kid.status == webhook_verdict::verified);
  CHECK(kid.kid == signer.current_kid());
  CHECK(verify(token, key_for(signer, signer.current_kid())) == webhook_verdict::verified);
}

TEST_CASE("alg none and HS256 keyed with the JWK text are refused before any key is used", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto key = key_for(signer, signer.current_kid());
  for (const auto mode : {plaid_sim::signing_mode::alg_none, plaid_sim::signing_mode::alg_hs256}) {
    const std::string token = signer.sign(body, mode, now_s);
    CHECK(plaid::read_webhook_kid(token).status == webhook_verdict::alg_not_allowed);
    CHECK(plaid::read_webhook_kid(token).kid.empty());
    CHECK(verify(token, key) == webhook_verdict::alg_not_allowed);
  }
  // Any other spelling is not ES256 either.
  for (const std::string alg : {"es256", "ES384", "ES256 ", "RS256", ""}) {
    const std::string token = token_of(R"({"alg":")" + alg + R"(","kid":"k"})", R"({"iat":1})");
    CHECK(plaid::read_webhook_kid(token).status == webhook_verdict::alg_not_allowed);
  }
}

TEST_CASE("a signature by another key under the right kid is a bad signature", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const std::string token = signer.sign(body, plaid_sim::signing_mode::wrong_key, now_s);
  CHECK(plaid::read_webhook_kid(token).kid == signer.current_kid());
  CHECK(verify(token, key_for(signer, signer.current_kid())) == webhook_verdict::bad_signature);
}

TEST_CASE("a kid nobody published finds no key, and a key for another kid is not used", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const std::string token = signer.sign(body, plaid_sim::signing_mode::unknown_kid, now_s);
  const plaid::webhook_kid kid = plaid::read_webhook_kid(token);
  CHECK(kid.status == webhook_verdict::verified);
  CHECK(kid.kid != signer.current_kid());
  CHECK(verify(token, std::nullopt) == webhook_verdict::unknown_kid);
  CHECK(verify(token, key_for(signer, signer.current_kid())) == webhook_verdict::unknown_kid);
}

TEST_CASE("a key whose expired_at has passed is refused even for a good signature", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const std::string token = signer.sign(body, plaid_sim::signing_mode::expired_key, now_s);
  const auto key = key_for(signer, signer.expired_kid());
  REQUIRE(key.expired_at);
  CHECK(verify(token, key) == webhook_verdict::key_expired);
  // The same key and token, checked at a time before the key expired, verify: only expiry failed.
  const auto earlier = std::chrono::system_clock::time_point(std::chrono::seconds(*key.expired_at - 1));
  const std::string early_token = signer.sign(body, plaid_sim::signing_mode::expired_key, *key.expired_at - 1);
  CHECK(plaid::verify_webhook(early_token, body, key, earlier) == webhook_verdict::verified);
}

TEST_CASE("iat older than five minutes or ahead of the clock by more than the skew is stale", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto key = key_for(signer, signer.current_kid());
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::stale_iat, now_s), key) == webhook_verdict::stale);
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::valid, now_s - 300), key) == webhook_verdict::verified);
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::valid, now_s - 301), key) == webhook_verdict::stale);
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::valid, now_s + 30), key) == webhook_verdict::verified);
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::valid, now_s + 31), key) == webhook_verdict::stale);
  CHECK(verify(signer.sign(body, plaid_sim::signing_mode::valid, now_s + 86'400), key) == webhook_verdict::stale);
  plaid::webhook_verify_settings wide;
  wide.max_age = std::chrono::seconds(600);
  CHECK(plaid::verify_webhook(signer.sign(body, plaid_sim::signing_mode::stale_iat, now_s), body, key, now, wide) ==
        webhook_verdict::verified);
}

TEST_CASE("a body changed after signing, even only re-serialised, does not match its hash", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto key = key_for(signer, signer.current_kid());
  const std::string token = signer.sign(body, plaid_sim::signing_mode::valid, now_s);
  std::string altered = body;
  altered.replace(altered.find("sandbox"), 7, "sandbax");
  CHECK(verify(token, key, altered) == webhook_verdict::body_mismatch);
  const std::string compact =
      R"({"environment":"sandbox","item_id":"item-1","webhook_code":"SYNC_UPDATES_AVAILABLE","webhook_type":"TRANSACTIONS"})";
  CHECK(verify(token, key, compact) == webhook_verdict::body_mismatch);
  CHECK(verify(token, key, body + "\n") == webhook_verdict::body_mismatch);
  CHECK(verify(token, key, "") == webhook_verdict::body_mismatch);
}

TEST_CASE("truncated, padded, re-encoded and garbage tokens never verify", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto key = key_for(signer, signer.current_kid());
  const std::string token = signer.sign(body, plaid_sim::signing_mode::valid, now_s);
  for (std::size_t length = 0; length < token.size(); ++length) {
    INFO("prefix of " << length << " characters");
    CHECK(verify(token.substr(0, length), key) != webhook_verdict::verified);
  }
  for (const std::string garbage : {"", ".", "..", "...", "a.b", "a.b.c.d", "not a token", "eyJ.eyJ.", "a..b", "a.b."}) {
    CHECK(verify(garbage, key) == webhook_verdict::malformed);
    CHECK(plaid::read_webhook_kid(garbage).status == webhook_verdict::malformed);
  }
  CHECK(verify(token + "=", key) == webhook_verdict::malformed);
  CHECK(verify(" " + token, key) == webhook_verdict::malformed);
  CHECK(verify(token + ".", key) == webhook_verdict::malformed);
  const std::size_t first_dot = token.find('.');
  CHECK(verify(token.substr(0, first_dot) + "==" + token.substr(first_dot), key) == webhook_verdict::malformed);
  // Standard base64 letters instead of base64url ones.
  std::string standard = token;
  for (char& c : standard) c = c == '-' ? '+' : c == '_' ? '/' : c;
  if (standard != token) CHECK(verify(standard, key) == webhook_verdict::malformed);
  CHECK(verify(std::string(limits::plaid_jwt_bytes_max + 1, 'a'), key) == webhook_verdict::malformed);
}

TEST_CASE("a flipped signature bit or a signature of the wrong length is a bad signature", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto key = key_for(signer, signer.current_kid());
  const std::string token = signer.sign(body, plaid_sim::signing_mode::valid, now_s);
  const std::size_t signature_at = token.rfind('.') + 1;
  std::string flipped = token;
  flipped[signature_at + 5] = flipped[signature_at + 5] == 'A' ? 'B' : 'A';
  CHECK(verify(flipped, key) == webhook_verdict::bad_signature);
  const std::string signing_input = token.substr(0, signature_at);
  CHECK(verify(signing_input + plaid_sim::base64url_encode(std::string(63, '\x01')), key) == webhook_verdict::bad_signature);
  CHECK(verify(signing_input + plaid_sim::base64url_encode(std::string(64, '\0')), key) == webhook_verdict::bad_signature);
  CHECK(verify(signing_input, key) == webhook_verdict::bad_signature);
}

TEST_CASE("headers without a kid, with duplicate members or critical extensions are malformed", "[plaid][webhook]") {
  const std::string payload = R"({"iat":1700000000,"request_body_sha256":"00"})";
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256"})", payload)).status == webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":""})", payload)).status == webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":7})", payload)).status == webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":"k","alg":"none"})", payload)).status ==
        webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":"k","crit":["b64"]})", payload)).status ==
        webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"(["ES256"])", payload)).status == webhook_verdict::malformed);
  CHECK(plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":")" + std::string(200, 'k') + "\"}", payload)).status ==
        webhook_verdict::malformed);
  const plaid::webhook_kid ok = plaid::read_webhook_kid(token_of(R"({"alg":"ES256","kid":"k","typ":"JWT"})", payload));
  CHECK(ok.status == webhook_verdict::verified);
  CHECK(ok.kid == "k");
}

TEST_CASE("a key whose coordinates are not a P-256 point is invalid, not a bad signature", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const std::string token = signer.sign(body, plaid_sim::signing_mode::valid, now_s);
  const auto good = key_for(signer, signer.current_kid());
  auto off_curve = good;
  off_curve.y = good.x;  // (x, x) is on the curve with negligible probability
  CHECK(verify(token, off_curve) == webhook_verdict::key_invalid);
  auto short_x = good;
  short_x.x = plaid_sim::base64url_encode(std::string(31, '\x05'));
  CHECK(verify(token, short_x) == webhook_verdict::key_invalid);
  auto not_base64 = good;
  not_base64.y = "!!" + good.y.substr(2);
  CHECK(verify(token, not_base64) == webhook_verdict::key_invalid);
  auto zero = good;
  zero.x = plaid_sim::base64url_encode(std::string(32, '\0'));
  zero.y = zero.x;
  CHECK(verify(token, zero) == webhook_verdict::key_invalid);
}

TEST_CASE("a JWK is read from Plaid's shape and refused when it is not an ES256 P-256 key", "[plaid][webhook]") {
  const plaid_sim::webhook_signer signer(now_s);
  const auto current = key_for(signer, signer.current_kid());
  CHECK(current.kid == signer.current_kid());
  CHECK(!current.expired_at);
  CHECK(current.x.size() == 43);
  CHECK(key_for(signer, signer.expired_kid()).expired_at == now_s - 86'400);
  CHECK(!plaid::parse_verification_key(R"({"kid":"k","x":"a","y":"b"})"));  // no created_at
  CHECK(!plaid::parse_verification_key(R"({"alg":"RS256","kid":"k","x":"a","y":"b","created_at":1})"));
  CHECK(!plaid::parse_verification_key(R"({"crv":"P-384","kid":"k","x":"a","y":"b","created_at":1})"));
  CHECK(!plaid::parse_verification_key(R"({"kid":"k","x":"a","y":"b","created_at":1,"expired_at":"soon"})"));
  CHECK(!plaid::parse_verification_key("not json"));
  const auto minimal = plaid::parse_verification_key(R"({"kid":"k","x":"a","y":"b","created_at":1,"expired_at":2})");
  REQUIRE(minimal);
  CHECK(minimal->expired_at == 2);
}
