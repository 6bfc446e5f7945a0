#pragma once
// Plaid sends amounts as JSON numbers (72.1, -500, 1e-7). bankworker stores integer minor units,
// so an amount is converted from the number's *text*, digit by digit, never through a double.
// A value with more precision than its currency has (1.5 JPY, 72.105 USD) is refused rather than
// rounded: rounding would silently invent or lose money.

#include <cstdint>
#include <string>
#include <string_view>

namespace bankworker::plaid {

// Digits a JSON number may carry before it is refused as unreasonable (no amount has more).
inline constexpr std::size_t amount_digits_max = 40;
inline constexpr int amount_decimal_exponent_max = 40;

struct amount_result {
  bool ok = false;
  std::int64_t minor = 0;
  std::string error;  // why not, when !ok; names the limit or the currency's exponent
};

// Converts JSON number text to minor units for a currency with `exponent` decimals.
amount_result parse_minor_units(std::string_view number_text, int exponent);

}  // namespace bankworker::plaid
