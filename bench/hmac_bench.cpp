// Every Stripe webhook is verified before anything else happens, so HMAC-SHA256 over the body is
// on the hot path. This measures, for a 2 KB body (a typical payment_intent.succeeded event):
//   - raw HMAC-SHA256/s with libsodium (crypto_auth_hmacsha256, streaming, no copy of the body),
//     OpenSSL's one-shot HMAC() (which needs "t.body" contiguous, so the bench pre-builds it), and
//     OpenSSL's EVP_MAC with the algorithm fetched once;
//   - verifications/s through stripe::verify_signature (parse, HMAC, constant-time compare,
//     tolerance), with one secret, with two secrets where the second matches (rotation), and for a
//     forged signature (the reject path).
// Each figure is the best of three rounds, because the machine's two cores are shared.
//
// Usage: hmac_bench [--iterations N]   (default 100000 per round)

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/stripe/signature.hpp"
#include "crypto/secret.hpp"

namespace {

constexpr std::size_t body_bytes = 2048;
constexpr std::string_view secret_text = "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
constexpr std::string_view rolled_secret_text = "whsec_Q0l2kAqvLSLqDTR8YrmH3PcwzJb9fE1a";
constexpr std::int64_t now_s = 1'763'776'800;

// A payment_intent.succeeded-shaped body padded to exactly body_bytes.
std::string make_body() {
  std::string body =
      R"({"id":"evt_3QkX2bLkdIwHu7ix0abcdEFG","object":"event","api_version":"2024-06-20","created":1763776790,)"
      R"("data":{"object":{"id":"pi_3QkX2bLkdIwHu7ix0xyz","object":"payment_intent","amount":2000,)"
      R"("amount_received":2000,"currency":"usd","status":"succeeded","latest_charge":"ch_3QkX2bLkdIwHu7ix0q",)"
      R"("metadata":{"order_id":"6735"},"description":")";
  constexpr std::string_view closing = "\"}}}";
  body.append(body_bytes - body.size() - closing.size(), 'x');
  body += closing;
  return body;
}

std::string hex_of(const unsigned char* bytes, std::size_t size) {
  std::string hex(2 * size + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes, size);
  hex.pop_back();
  return hex;
}

std::string sign(std::string_view key, std::string_view timestamp, std::string_view body) {
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(timestamp.data()), timestamp.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>("."), 1);
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(body.data()), body.size());
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_final(&state, mac);
  return hex_of(mac, sizeof mac);
}

// Runs `operation` `iterations` times per round, three rounds; returns the best rate per second.
// `operation` returns a byte that is folded into `sink` so the work cannot be optimised away.
template <typename Operation>
double best_rate_per_s(long iterations, unsigned& sink, Operation operation) {
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) sink += operation();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(iterations) / seconds);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  long iterations = 100'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) == "--iterations") iterations = std::strtol(argv[i + 1], nullptr, 10);
  }
  if (iterations <= 0) {
    std::fputs("hmac_bench: --iterations must be a positive number\n", stderr);
    return 2;
  }

  const std::string body = make_body();
  const std::string timestamp = std::to_string(now_s);
  const std::string signed_text = timestamp + "." + body;
  const auto key = reinterpret_cast<const unsigned char*>(secret_text.data());
  unsigned sink = 0;

  const double sodium_per_s = best_rate_per_s(iterations, sink, [&] {
    crypto_auth_hmacsha256_state state;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&state, key, secret_text.size());
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(timestamp.data()), timestamp.size());
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>("."), 1);
    crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(body.data()), body.size());
    crypto_auth_hmacsha256_final(&state, mac);
    return mac[0];
  });

  const double openssl_oneshot_per_s = best_rate_per_s(iterations, sink, [&] {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret_text.data(), static_cast<int>(secret_text.size()),
         reinterpret_cast<const unsigned char*>(signed_text.data()), signed_text.size(), mac, &length);
    return mac[0];
  });

  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) {
    std::fputs("hmac_bench: OpenSSL has no HMAC\n", stderr);
    return 1;
  }
  char digest_name[] = "SHA256";
  const OSSL_PARAM parameters[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                                   OSSL_PARAM_construct_end()};
  const double openssl_evp_mac_per_s = best_rate_per_s(iterations, sink, [&] {
    unsigned char mac[EVP_MAX_MD_SIZE];
    std::size_t length = 0;
    EVP_MAC_CTX* context = EVP_MAC_CTX_new(hmac);
    EVP_MAC_init(context, key, secret_text.size(), parameters);
    EVP_MAC_update(context, reinterpret_cast<const unsigned char*>(timestamp.data()), timestamp.size());
    EVP_MAC_update(context, reinterpret_cast<const unsigned char*>("."), 1);
    EVP_MAC_update(context, reinterpret_cast<const unsigned char*>(body.data()), body.size());
    EVP_MAC_final(context, mac, &length, sizeof mac);
    EVP_MAC_CTX_free(context);
    return mac[0];
  });
  EVP_MAC_free(hmac);

  namespace stripe = bankworker::stripe;
  using bankworker::crypto::secret;
  const std::chrono::system_clock::time_point now{std::chrono::seconds{now_s}};
  std::vector<secret> one_secret;
  one_secret.push_back(secret::copy_of(secret_text));
  std::vector<secret> two_secrets;
  two_secrets.push_back(secret::copy_of(rolled_secret_text));
  two_secrets.push_back(secret::copy_of(secret_text));
  const std::string header = "t=" + timestamp + ",v1=" + sign(secret_text, timestamp, body);
  const std::string forged = "t=" + timestamp + ",v1=" + sign("whsec_forger", timestamp, body);

  if (!stripe::verify_signature(header, body, one_secret, now).verified() ||
      stripe::verify_signature(header, body, two_secrets, now).secret_index != 1 ||
      stripe::verify_signature(forged, body, one_secret, now).verified()) {
    std::fputs("hmac_bench: verify_signature disagrees with libsodium; not measuring\n", stderr);
    return 1;
  }

  const double verify_per_s = best_rate_per_s(iterations, sink, [&] {
    return static_cast<unsigned>(stripe::verify_signature(header, body, one_secret, now).verified());
  });
  const double verify_two_secrets_per_s = best_rate_per_s(iterations, sink, [&] {
    return static_cast<unsigned>(stripe::verify_signature(header, body, two_secrets, now).secret_index);
  });
  const double forged_reject_per_s = best_rate_per_s(iterations, sink, [&] {
    return static_cast<unsigned>(stripe::verify_signature(forged, body, one_secret, now).verified());
  });

  std::printf("body: %zu bytes; best of 3 rounds of %ld iterations each (sink %u)\n", body.size(), iterations, sink);
  std::printf("raw HMAC-SHA256, libsodium crypto_auth_hmacsha256: %10.0f /s (%.2f us)\n", sodium_per_s,
              1e6 / sodium_per_s);
  std::printf("raw HMAC-SHA256, OpenSSL HMAC() one-shot:          %10.0f /s (%.2f us)\n", openssl_oneshot_per_s,
              1e6 / openssl_oneshot_per_s);
  std::printf("raw HMAC-SHA256, OpenSSL EVP_MAC (fetched once):   %10.0f /s (%.2f us)\n", openssl_evp_mac_per_s,
              1e6 / openssl_evp_mac_per_s);
  std::printf("verify_signature, 1 secret (OpenSSL SHA-256):      %10.0f /s (%.2f us)\n", verify_per_s,
              1e6 / verify_per_s);
  std::printf("verify_signature, 2 secrets, second matches:       %10.0f /s (%.2f us)\n", verify_two_secrets_per_s,
              1e6 / verify_two_secrets_per_s);
  std::printf("verify_signature, forged signature rejected:       %10.0f /s (%.2f us)\n", forged_reject_per_s,
              1e6 / forged_reject_per_s);
  std::printf(
      "{\"bench\":\"hmac\",\"body_bytes\":%zu,\"libsodium_hmac_per_s\":%.0f,\"openssl_hmac_oneshot_per_s\":%.0f,"
      "\"openssl_evp_mac_per_s\":%.0f,\"verify_per_s\":%.0f,\"verify_two_secrets_per_s\":%.0f,"
      "\"forged_reject_per_s\":%.0f}\n",
      body.size(), sodium_per_s, openssl_oneshot_per_s, openssl_evp_mac_per_s, verify_per_s, verify_two_secrets_per_s,
      forged_reject_per_s);
  return 0;
}
