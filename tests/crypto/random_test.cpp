#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include "crypto/random.hpp"

namespace {

std::uint64_t unix_ms_now() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
}

std::uint64_t unix_ms_of(const bankworker::core::uuid& id) {
  std::uint64_t ms = 0;
  for (int i = 0; i < 6; ++i) ms = (ms << 8) | id.bytes[static_cast<std::size_t>(i)];
  return ms;
}

}  // namespace

TEST_CASE("A batch of time-ordered ids from one draw: each its own random bits, now's time, version 7",
          "[crypto][random]") {
  CHECK(bankworker::crypto::time_ordered_uuids(0).empty());

  const std::uint64_t before = unix_ms_now();
  const auto ids = bankworker::crypto::time_ordered_uuids(1000);
  const std::uint64_t after = unix_ms_now();
  REQUIRE(ids.size() == 1000);
  std::set<std::string> texts;
  std::set<std::string> random_parts;
  for (const auto& id : ids) {
    const std::string text = id.to_string();
    texts.insert(text);
    random_parts.insert(text.substr(15));  // past the time and the version digit
    CHECK(text[14] == '7');
    CHECK((id.bytes[8] & 0xc0) == 0x80);
    CHECK(unix_ms_of(id) >= before);
    CHECK(unix_ms_of(id) <= after);
  }
  // 74 random bits each: a repeat among 1,000 means the draw was not spread over the batch.
  CHECK(texts.size() == ids.size());
  CHECK(random_parts.size() == ids.size());
}
