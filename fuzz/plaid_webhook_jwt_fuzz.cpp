// Plaid-Verification JWT parsing and verification with an attacker-chosen token and body. The input
// is split at the first newline: token before, body after; the body is also read as a JWK. Beyond
// "no crash", checks what must hold for any input: the two entry points agree on malformed and
// alg_not_allowed tokens, and nothing verifies (forging ES256 by fuzzing would be news).
#include <chrono>
#include <cstdlib>
#include <string_view>

#include "connectors/plaid/webhook_verify.hpp"

using namespace bankworker;

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  // The P-256 base point as the public key: a valid point (its private key is 1, but a signature
  // still has to be computed, which mutation cannot do).
  static const plaid::verification_key key = [] {
    plaid::verification_key k;
    k.kid = "6c5516e1-92dc-479e-a8ff-5a51992e0001";
    k.x = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    k.y = "T-NC4v4af5uOfrSnfA-eFivOM1drMV7Oy7ZAaDe_UfU";
    k.created_at = 1'600'000'000;
    return k;
  }();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string_view token = input.substr(0, newline);
  // Never a null view (simdjson would memcpy from it): requests and responses are std::strings.
  static const char nothing[] = "";
  const std::string_view body = newline == std::string_view::npos ? std::string_view(nothing, 0) : input.substr(newline + 1);

  const plaid::webhook_kid kid = plaid::read_webhook_kid(token);
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  const plaid::webhook_verdict with_key = plaid::verify_webhook(token, body, key, now);
  const plaid::webhook_verdict without_key = plaid::verify_webhook(token, body, std::nullopt, now);
  if (with_key == plaid::webhook_verdict::verified) std::abort();
  if (kid.status != plaid::webhook_verdict::verified && (with_key != kid.status || without_key != kid.status)) {
    std::abort();
  }
  if (kid.status == plaid::webhook_verdict::verified && kid.kid.empty()) std::abort();
  (void)plaid::parse_verification_key(body);
  return 0;
}
