#include "connectors/plaid/amount.hpp"

#include <limits>

namespace bankworker::plaid {

namespace {

amount_result refuse(std::string reason) { return {false, 0, std::move(reason)}; }

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

}  // namespace

// Longer than 70 lines on purpose: one forward pass over the JSON number grammar, then one exact
// shift into minor units; split into pieces, the position and the digits would have to travel
// between them and the single reading of the grammar would be lost.
amount_result parse_minor_units(std::string_view text, int exponent) {
  // JSON grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  std::size_t i = 0;
  const bool negative = i < text.size() && text[i] == '-';
  if (negative) ++i;
  std::string digits;  // significant digits, integer and fraction parts together
  const std::size_t integer_start = i;
  while (i < text.size() && is_digit(text[i])) digits.push_back(text[i++]);
  const std::size_t integer_digits = i - integer_start;
  if (integer_digits == 0) return refuse("amount '" + std::string(text) + "' is not a JSON number");
  if (integer_digits > 1 && text[integer_start] == '0') return refuse("amount '" + std::string(text) + "' has a leading zero");
  int scale = 0;  // value = digits * 10^-scale * 10^decimal_exponent
  if (i < text.size() && text[i] == '.') {
    ++i;
    const std::size_t fraction_start = i;
    while (i < text.size() && is_digit(text[i])) digits.push_back(text[i++]);
    if (i == fraction_start) return refuse("amount '" + std::string(text) + "' has no digits after the point");
    scale = static_cast<int>(i - fraction_start);
  }
  int decimal_exponent = 0;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    bool exponent_negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) exponent_negative = text[i++] == '-';
    const std::size_t exponent_start = i;
    while (i < text.size() && is_digit(text[i])) {
      if (decimal_exponent > amount_decimal_exponent_max) break;
      decimal_exponent = decimal_exponent * 10 + (text[i++] - '0');
    }
    if (i == exponent_start) return refuse("amount '" + std::string(text) + "' has an empty exponent");
    if (decimal_exponent > amount_decimal_exponent_max) {
      return refuse("amount '" + std::string(text) + "' exponent beyond amount_decimal_exponent_max");
    }
    if (exponent_negative) decimal_exponent = -decimal_exponent;
  }
  // A number token may carry trailing whitespace; anything else is not part of a number.
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) ++i;
  if (i != text.size()) return refuse("amount '" + std::string(text) + "' is not a JSON number");
  if (digits.size() > amount_digits_max) return refuse("amount has more than amount_digits_max digits");

  // minor = digits * 10^(exponent + decimal_exponent - scale)
  int shift = exponent + decimal_exponent - scale;
  while (shift < 0) {
    // Dropping a digit is allowed only when it is zero: otherwise the currency cannot hold it.
    if (digits.empty() || digits.back() != '0') {
      if (digits.find_first_not_of('0') == std::string::npos) {
        digits.clear();
        break;
      }
      return refuse("amount '" + std::string(text) + "' has more precision than the currency's " +
                    std::to_string(exponent) + " decimal(s)");
    }
    digits.pop_back();
    ++shift;
  }
  constexpr std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t magnitude = 0;
  const auto push_digit = [&](int digit) {
    if (magnitude > (limit - static_cast<std::uint64_t>(digit)) / 10) return false;
    magnitude = magnitude * 10 + static_cast<std::uint64_t>(digit);
    return true;
  };
  for (const char c : digits) {
    if (!push_digit(c - '0')) return refuse("amount '" + std::string(text) + "' does not fit in 64-bit minor units");
  }
  for (; shift > 0; --shift) {
    if (magnitude != 0 && !push_digit(0)) {
      return refuse("amount '" + std::string(text) + "' does not fit in 64-bit minor units");
    }
  }
  const auto value = static_cast<std::int64_t>(magnitude);
  return {true, negative ? -value : value, {}};
}

}  // namespace bankworker::plaid
