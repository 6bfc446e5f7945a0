#include <catch2/catch.hpp>

#include "crypto/redact.hpp"

using bankworker::crypto::redact;
using bankworker::crypto::redact_into;
using bankworker::crypto::secret;

namespace {

std::size_t count_redactions(std::string_view text) {
  std::string out;
  return redact_into(text, out);
}

}  // namespace

TEST_CASE("Plaid tokens are masked inside larger text, keeping type and environment", "[crypto][redact]") {
  CHECK(redact("using access-sandbox-de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d now") ==
        "using access-sandbox-[REDACTED] now");
  CHECK(redact("public-production-0f0c7a2e-1b4b-4c8e-9d5e-3a2b1c0d9e8f,") == "public-production-[REDACTED],");
  CHECK(redact("token=link-development-0F0C7A2E-1B4B-4C8E-9D5E-3A2B1C0D9E8F") ==
        "token=link-development-[REDACTED]");
  CHECK(redact("processor-sandbox-0f0c7a2e-1b4b-4c8e-9d5e-3a2b1c0d9e8f") == "processor-sandbox-[REDACTED]");
  CHECK(count_redactions("a access-sandbox-de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d b "
                         "public-sandbox-de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d") == 2);
}

TEST_CASE("Stripe secret and restricted keys and webhook secrets are masked after their prefix", "[crypto][redact]") {
  CHECK(redact("key sk_live_51HqLyjWDarjtT1zdp7dc and more") == "key sk_live_[REDACTED] and more");
  CHECK(redact("sk_test_4eC39HqLyjWDarjtT1zdp7dc") == "sk_test_[REDACTED]");
  CHECK(redact("(rk_live_abcDEF123)") == "(rk_live_[REDACTED])");
  CHECK(redact("rk_test_x") == "rk_test_[REDACTED]");
  CHECK(redact("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/= end") == "secret whsec_[REDACTED] end");
}

TEST_CASE("card numbers that pass Luhn keep only their first 6 and last 4 digits", "[crypto][redact]") {
  CHECK(redact("card 4242424242424242 ok") == "card 424242******4242 ok");
  CHECK(redact("4242 4242 4242 4242") == "4242 42** **** 4242");
  CHECK(redact("amex 378282246310005.") == "amex 378282*****0005.");
  CHECK(redact("19 digits 6221260000000000001") == "19 digits 622126*********0001");
  CHECK(redact("dashes 5555-5555-5555-4444!") == "dashes 5555-55**-****-4444!");
}

TEST_CASE("numbers that are not card numbers are left alone", "[crypto][redact]") {
  // Fails Luhn, too short, too long, or part of a larger word.
  for (const char* text : {"order 4242424242424241 shipped", "phone 4155550100", "id 123456789012",
                           "12345678901234567890123", "ref4242424242424242x", "2026-11-22T01:15:52Z",
                           "amount 1234.56 USD", "uuid de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d"}) {
    INFO(text);
    CHECK(redact(text) == text);
  }
}

TEST_CASE("secret values inside JSON are masked, keeping the document valid", "[crypto][redact]") {
  CHECK(redact(R"({"client_id":"abc","secret":"0123456789abcdef0123456789","count":500})") ==
        R"({"client_id":"abc","secret":"[REDACTED]","count":500})");
  CHECK(redact(R"({"access_token" : "opaque\"token"})") == R"({"access_token" : "[REDACTED]"})");
  CHECK(redact(R"({"item":{"card":"4242424242424242","key":"sk_live_abc"}})") ==
        R"({"item":{"card":"424242******4242","key":"sk_live_[REDACTED]"}})");
  // A member that merely mentions a secret name is not masked.
  CHECK(redact(R"({"secret_count":3,"name":"secret"})") == R"({"secret_count":3,"name":"secret"})");
}

TEST_CASE("ordinary text passes through unchanged", "[crypto][redact]") {
  for (const char* text : {"", "plaid sync finished for connection 3 in 120 ms", "sk_ alone", "whsec_",
                           "access-sandbox-not-a-uuid", "skip the risk", "{\"secrets\":\"x\"}",
                           "tenant 7fe07284-c9bf-416c-a821-a9eec7dd0d46 created", "émoji ✓ text"}) {
    INFO(text);
    CHECK(redact(text) == text);
    CHECK(count_redactions(text) == 0);
  }
}

TEST_CASE("exact occurrences of known secrets are masked wherever they appear", "[crypto][redact]") {
  const secret plaid_secret = secret::copy_of("f00dfacecafe1234");
  const secret tiny = secret::copy_of("abc");
  const secret* known[] = {&plaid_secret, &tiny};
  CHECK(redact("header PLAID-SECRET: f00dfacecafe1234;", known) == "header PLAID-SECRET: [REDACTED];");
  // Secrets shorter than known_secret_bytes_min are not searched for.
  CHECK(redact("abc abc", known) == "abc abc");
}

TEST_CASE("Luhn check agrees with known test card numbers", "[crypto][redact]") {
  CHECK(bankworker::crypto::passes_luhn("4242424242424242"));
  CHECK(bankworker::crypto::passes_luhn("4000 0566 5566 5556"));
  CHECK_FALSE(bankworker::crypto::passes_luhn("4242424242424243"));
  CHECK_FALSE(bankworker::crypto::passes_luhn(""));
}
