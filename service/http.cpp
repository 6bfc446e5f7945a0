// HTTP message helpers shared by routes (service/http.hpp).

#include "service/http.hpp"

#include <algorithm>
#include <cctype>

namespace bankworker::service {

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view http_request::header(std::string_view name) const noexcept {
  for (const auto& [key, value] : headers) {
    if (equal_ignoring_case(key, name)) return value;
  }
  return {};
}

}  // namespace bankworker::service
