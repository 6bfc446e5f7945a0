// Stripe-Signature parsing and verification with attacker-chosen header and body. The input is
// split at the first newline: header before, body after. Beyond "no crash", checks what must hold
// for any input: a forged header never verifies against a secret the input cannot know.
#include <sodium.h>

#include <chrono>
#include <cstdlib>
#include <string_view>

#include "connectors/stripe/signature.hpp"

using namespace bankworker;

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  static const bool initialised = sodium_init() >= 0;
  if (!initialised) std::abort();
  static const crypto::secret secrets[] = {crypto::secret::copy_of("whsec_fuzzing_secret_one"),
                                           crypto::secret::copy_of("whsec_fuzzing_secret_two")};

  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string_view header = input.substr(0, newline);
  const std::string_view body = newline == std::string_view::npos ? std::string_view{} : input.substr(newline + 1);

  (void)stripe::parse_signature_header(header);
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  const stripe::signature_check check = stripe::verify_signature(header, body, secrets, now);
  // Finding an HMAC-SHA256 collision by fuzzing would be news; a "verified" here is a bug.
  if (check.status == stripe::signature_status::verified) std::abort();
  return 0;
}
