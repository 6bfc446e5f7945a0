#pragma once
// Currencies and their minor-unit exponents. bankworker.currencies in the database is the source
// of truth (ISO 4217 plus declared unofficial currencies); a currency_table is loaded from it and
// handed to pure code (normalisers, posting rules) so that code needs no database.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bankworker::core {

inline constexpr int currency_exponent_max = 18;

struct currency {
  std::string code;  // "USD", "JPY", or an unofficial code such as "BTC"
  int exponent = 2;  // digits after the decimal point of one major unit
  bool iso = true;
};

class currency_table {
 public:
  currency_table() = default;
  explicit currency_table(std::vector<currency> currencies);

  // The currency, or nothing when the code is unknown.
  const currency* find(std::string_view code) const noexcept;

 private:
  std::vector<currency> sorted_;
};

}  // namespace bankworker::core
