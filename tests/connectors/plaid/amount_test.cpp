#include <catch2/catch.hpp>

#include "connectors/plaid/amount.hpp"

using bankworker::plaid::parse_minor_units;

namespace {

std::int64_t minor(std::string_view text, int exponent) {
  const auto result = parse_minor_units(text, exponent);
  INFO(text << " with exponent " << exponent << ": " << result.error);
  REQUIRE(result.ok);
  return result.minor;
}

std::string refusal(std::string_view text, int exponent) {
  const auto result = parse_minor_units(text, exponent);
  INFO(text << " with exponent " << exponent);
  REQUIRE_FALSE(result.ok);
  return result.error;
}

}  // namespace

TEST_CASE("amounts become exact minor units for the currency's exponent", "[plaid][amount]") {
  CHECK(minor("72.1", 2) == 7210);
  CHECK(minor("28.34", 2) == 2834);
  CHECK(minor("-500", 2) == -50000);
  CHECK(minor("0", 2) == 0);
  CHECK(minor("-0.00", 2) == 0);
  CHECK(minor("1234", 0) == 1234);          // JPY
  CHECK(minor("1.234", 3) == 1234);         // BHD
  CHECK(minor("0.00000001", 8) == 1);       // an unofficial currency with 8 decimals
  CHECK(minor("72.10", 2) == 7210);         // trailing zeros carry no precision
  CHECK(minor("1500.000", 0) == 1500);
  CHECK(minor("1.5e2", 2) == 15000);        // exponent notation, exactly
  CHECK(minor("25E-2", 2) == 25);
  CHECK(minor("92233720368547758.07", 2) == INT64_MAX);
}

TEST_CASE("the classic float traps come out exact", "[plaid][amount]") {
  // 0.1 + 0.2 and friends: as doubles these are not what they say; as text they are.
  CHECK(minor("0.3", 2) == 30);
  CHECK(minor("1.005", 3) == 1005);
  CHECK(minor("4.35", 2) == 435);
  CHECK(minor("1.15", 2) == 115);
  CHECK(minor("9007199254740993", 0) == 9007199254740993);  // 2^53 + 1, not representable as a double
}

TEST_CASE("more precision than the currency holds is refused, not rounded", "[plaid][amount]") {
  CHECK_THAT(refusal("1.5", 0), Catch::Contains("more precision than the currency's 0 decimal(s)"));
  CHECK_THAT(refusal("72.105", 2), Catch::Contains("2 decimal(s)"));
  CHECK_THAT(refusal("0.0001", 3), Catch::Contains("3 decimal(s)"));
  CHECK_THAT(refusal("1e-3", 2), Catch::Contains("precision"));
}

TEST_CASE("text that is not a JSON number, or too large, is refused", "[plaid][amount]") {
  for (const char* text : {"", "-", "abc", "1.", ".5", "01", "1e", "1e+", "+1", "1,5", "NaN", "Infinity", "1.2.3", "0x10"}) {
    INFO(text);
    CHECK_FALSE(parse_minor_units(text, 2).ok);
  }
  CHECK_THAT(refusal("92233720368547758.08", 2), Catch::Contains("64-bit"));
  CHECK_THAT(refusal("1e40", 2), Catch::Contains("64-bit"));
  CHECK_THAT(refusal("1e999", 2), Catch::Contains("amount_decimal_exponent_max"));
  CHECK_THAT(refusal(std::string(41, '1'), 0), Catch::Contains("amount_digits_max"));
}
