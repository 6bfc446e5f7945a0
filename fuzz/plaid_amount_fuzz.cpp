// Amount text to minor units. Beyond "no crash": an accepted amount round-trips — printing the
// minor units back with the exponent's decimal point and parsing again gives the same value.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "connectors/plaid/amount.hpp"

namespace {

std::string print_minor(std::int64_t minor, int exponent) {
  const bool negative = minor < 0;
  std::string digits = std::to_string(negative ? -(minor + 1) + 1ULL : static_cast<unsigned long long>(minor));
  if (exponent > 0) {
    while (static_cast<int>(digits.size()) <= exponent) digits.insert(0, "0");
    digits.insert(digits.size() - static_cast<std::size_t>(exponent), ".");
  }
  return (negative ? "-" : "") + digits;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  if (size < 1) return 0;
  const int exponent = data[0] % 9;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto result = bankworker::plaid::parse_minor_units(text, exponent);
  if (!result.ok) {
    if (result.error.empty()) std::abort();
    return 0;
  }
  const auto again = bankworker::plaid::parse_minor_units(print_minor(result.minor, exponent), exponent);
  if (!again.ok || again.minor != result.minor) std::abort();
  return 0;
}
