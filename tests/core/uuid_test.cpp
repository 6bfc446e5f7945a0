#include <catch2/catch.hpp>

#include "core/uuid.hpp"

using bankworker::core::uuid;

TEST_CASE("a canonical uuid parses and prints back in lowercase", "[core][uuid]") {
  const auto parsed = uuid::parse("7FE07284-C9BF-416C-A821-A9EEC7DD0D46");
  REQUIRE(parsed);
  CHECK(parsed->to_string() == "7fe07284-c9bf-416c-a821-a9eec7dd0d46");
  CHECK(parsed->bytes[0] == 0x7f);
  CHECK(parsed->bytes[15] == 0x46);
}

TEST_CASE("anything but the canonical uuid form is rejected", "[core][uuid]") {
  for (const char* text : {"", "7fe07284c9bf416ca821a9eec7dd0d46", "7fe07284-c9bf-416c-a821-a9eec7dd0d4",
                           "7fe07284-c9bf-416c-a821-a9eec7dd0d466", "7fe07284-c9bf-416c-a821_a9eec7dd0d46",
                           "7fe07284-c9bf-416c-a821-a9eec7dd0d4g", "{7fe07284-c9bf-416c-a821-a9eec7dd0d4}",
                           "'; drop table x; --                 "}) {
    INFO(text);
    CHECK_FALSE(uuid::parse(text));
  }
}

TEST_CASE("a uuid from random bytes is version 4 with the RFC 4122 variant", "[core][uuid]") {
  std::array<std::uint8_t, 16> bytes;
  bytes.fill(0xff);
  const uuid id = uuid::from_random_bytes(bytes);
  const std::string text = id.to_string();
  CHECK(text[14] == '4');
  CHECK((text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b'));
  CHECK(uuid::parse(text) == id);
}

TEST_CASE("a time-ordered uuid is version 7, leads with its milliseconds, and sorts by them", "[core][uuid]") {
  std::array<std::uint8_t, 16> high;
  high.fill(0xff);
  std::array<std::uint8_t, 16> low{};
  // A moment in 2025, in milliseconds since the epoch.
  const uuid id = uuid::time_ordered(0x019AF6A2A67BULL, high);
  const std::string text = id.to_string();
  CHECK(text.substr(0, 13) == "019af6a2-a67b");
  CHECK(text[14] == '7');
  CHECK((text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b'));
  CHECK(uuid::parse(text) == id);
  // One millisecond later sorts after it whatever the random bits (as text and as bytes, which is
  // how PostgreSQL orders uuids).
  const uuid later = uuid::time_ordered(0x019AF6A2A67CULL, low);
  CHECK(later.to_string() > text);
  CHECK(later.bytes > id.bytes);
}
