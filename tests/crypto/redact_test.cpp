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

TEST_CASE("Plaid tokens are masked whatever comes before or after them", "[crypto][redact]") {
  const std::string uuid = "de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d";
  // A type glued to a word, longer than any real type, after a percent-escape, capitalised, or
  // followed straight by more text.
  CHECK(redact("xaccess-sandbox-" + uuid) == "xaccess-sandbox-[REDACTED]");
  CHECK(redact(std::string(40, 'q') + "access-production-" + uuid) ==
        std::string(40, 'q') + "access-production-[REDACTED]");
  CHECK(redact("token=%22access-sandbox-" + uuid + "%22") == "token=%22access-sandbox-[REDACTED]%22");
  CHECK(redact("Access-development-" + uuid) == "Access-development-[REDACTED]");
  CHECK(redact("access-sandbox-" + uuid + "extra") == "access-sandbox-[REDACTED]extra");
  CHECK(redact("_public-sandbox-" + uuid + "_") == "_public-sandbox-[REDACTED]_");
  // A bare uuid, or one after an environment with no type before it, is not a token.
  CHECK(redact("sandbox-" + uuid) == "sandbox-" + uuid);
  CHECK(redact("1-sandbox-" + uuid) == "1-sandbox-" + uuid);
}

TEST_CASE("secret JSON members are found in any case and any JSON escaping of their name", "[crypto][redact]") {
  for (const std::string_view name : {"Secret", "ACCESS_TOKEN", "Client_Secret", R"(\u0073ecret)", R"(access\u005Ftoken)",
                                 R"(pass\u0077ord)", R"(\u0050ASSWORD)", R"(authoriz\u0061tion)", "Authorization",
                                 R"(api\u005fkey)", R"(public\u005Ftoken)", "PLAINTEXT"}) {
    INFO(name);
    CHECK(redact("{\"" + std::string(name) + "\" : \"hunter2-value\"}") == "{\"" + std::string(name) + "\" : \"[REDACTED]\"}");
  }
  // Names that only resemble a secret's stay as they are.
  for (const std::string_view text : {R"({"Secret_Count":"3"})", R"({"\u00e9secret":"x"})", R"({"secre\u0074s":"x"})",
                                 R"({"\u12345":"x"})"}) {
    INFO(text);
    CHECK(redact(text) == text);
  }
}

TEST_CASE("Authorization values are masked whatever their scheme, keeping the scheme", "[crypto][redact]") {
  CHECK(redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig") == "Authorization: Bearer [REDACTED]");
  CHECK(redact("authorization: Basic dXNlcjpwYXNz\r\nHost: x") == "authorization: Basic [REDACTED]\r\nHost: x");
  CHECK(redact("AUTHORIZATION:Token t0k3n") == "AUTHORIZATION:Token [REDACTED]");
  CHECK(redact("Proxy-Authorization: Digest username=\"u\", response=\"6629fae49393a053\", nc=1\nnext") ==
        "Proxy-Authorization: Digest [REDACTED]\nnext");
  CHECK(redact("Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830, Signature=5d672d79c15b") ==
        "Authorization: AWS4-HMAC-SHA256 [REDACTED]");
  CHECK(redact("Authorization: opaque0credential") == "Authorization: [REDACTED]");
  // Inside a JSON string: the value ends at an escaped line break or at the string's closing
  // quote, and an escaped quote does not end it.
  CHECK(redact(R"({"sent":"Authorization: Bearer abc\r\nHost: x","n":1})") ==
        R"({"sent":"Authorization: Bearer [REDACTED]\r\nHost: x","n":1})");
  CHECK(redact(R"({"h":"Authorization: Digest response=\"6629fae4\", nc=1"})") ==
        R"({"h":"Authorization: Digest [REDACTED]"})");
  // Text that only mentions authorization stays.
  for (const char* text : {"authorization failed for tenant 3", "Authorization:", "Authorization: \r\n"}) {
    INFO(text);
    CHECK(redact(text) == text);
  }
}

TEST_CASE("Vault tokens and Vault's plaintext member are masked", "[crypto][redact]") {
  CHECK(redact("X-Vault-Token: hvs.CAESIJlWh4-Hu_8vUe3JrTw7bgAqA") == "X-Vault-Token: hvs.[REDACTED]");
  CHECK(redact("batch hvb.AAAAAQJgxDjgYQ and recovery hvr.abc123") == "batch hvb.[REDACTED] and recovery hvr.[REDACTED]");
  CHECK(redact(R"({"auth":{"client_token":"hvs.CAESIJlWh4"}})") == R"({"auth":{"client_token":"hvs.[REDACTED]"}})");
  CHECK(redact(R"({"plaintext":"c2VjcmV0IGRhdGE="})") == R"({"plaintext":"[REDACTED]"})");
  CHECK(redact(R"({"data":{"plaintext": "dGhlIHRva2Vu"}})") == R"({"data":{"plaintext": "[REDACTED]"}})");
  for (const char* text : {"hvs.", "hvs alone", "the hvs. prefix"}) {
    INFO(text);
    CHECK(redact(text) == text);
  }
}

TEST_CASE("card numbers are masked whatever common separator groups them", "[crypto][redact]") {
  CHECK(redact("4242.4242.4242.4242") == "4242.42**.****.4242");
  CHECK(redact("4242/4242/4242/4242") == "4242/42**/****/4242");
  CHECK(redact("4242_4242_4242_4242") == "4242_42**_****_4242");
  CHECK(redact("4242\t4242\t4242\t4242") == "4242\t42**\t****\t4242");
  CHECK(redact("card 4242  4242  4242  4242 end") == "card 4242  42**  ****  4242 end");
  CHECK(redact("4242 - 4242 - 4242 - 4242") == "4242 - 42** - **** - 4242");
  CHECK(redact("3782-822463-10005") == "3782-82****-*0005");
  // Still Luhn-checked, and still only 13 to 19 digits.
  for (const char* text : {"4242.4242.4242.4241", "1.2.3.4", "2026/11/22 01:15", "192.168.100.200"}) {
    INFO(text);
    CHECK(redact(text) == text);
  }
}
