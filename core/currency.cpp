#include "core/currency.hpp"

#include <algorithm>

namespace bankworker::core {

currency_table::currency_table(std::vector<currency> currencies) : sorted_(std::move(currencies)) {
  std::sort(sorted_.begin(), sorted_.end(), [](const currency& a, const currency& b) { return a.code < b.code; });
}

const currency* currency_table::find(std::string_view code) const noexcept {
  const auto it = std::lower_bound(sorted_.begin(), sorted_.end(), code,
                                   [](const currency& c, std::string_view wanted) { return c.code < wanted; });
  if (it == sorted_.end() || it->code != code) return nullptr;
  return &*it;
}

}  // namespace bankworker::core
