// The redactor on arbitrary text. Beyond "no crash": with no known secrets, text in which nothing
// was masked comes out unchanged, and redacting an already redacted text masks nothing new that
// was not there (idempotence of the visible result).
#include <cstdlib>
#include <string>
#include <string_view>

#include "crypto/redact.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string once;
  const std::size_t masked = bankworker::crypto::redact_into(text, once);
  if (masked == 0 && once != text) std::abort();
  const std::string twice = bankworker::crypto::redact(once);
  if (twice != once) std::abort();
  return 0;
}
