// Retry delays: capped exponential ceilings, full jitter within them, reproducible from a seed.
#include <catch2/catch.hpp>

#include <random>

#include "queue/backoff.hpp"

using namespace std::chrono_literals;
using bankworker::queue::backoff_ceiling;
using bankworker::queue::backoff_delay;
using bankworker::queue::backoff_settings;

TEST_CASE("the backoff ceiling doubles from the base with each attempt and stops at the cap", "[queue][backoff]") {
  const backoff_settings settings{.base = 1'000ms, .cap = 60'000ms};
  CHECK(backoff_ceiling(1, settings) == 1'000ms);
  CHECK(backoff_ceiling(2, settings) == 2'000ms);
  CHECK(backoff_ceiling(6, settings) == 32'000ms);
  CHECK(backoff_ceiling(7, settings) == 60'000ms);
  CHECK(backoff_ceiling(4'000'000'000u, settings) == 60'000ms);
}

TEST_CASE("full jitter draws every delay between zero and the attempt's ceiling", "[queue][backoff]") {
  const std::uint64_t seed = Catch::rngSeed() + 1;
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  const backoff_settings settings{.base = 100ms, .cap = 10'000ms};
  for (std::uint32_t attempt = 1; attempt <= 30; ++attempt) {
    std::chrono::milliseconds largest{0};
    for (int draw = 0; draw < 200; ++draw) {
      const auto delay = backoff_delay(attempt, settings, random);
      CHECK(delay >= 0ms);
      CHECK(delay <= backoff_ceiling(attempt, settings));
      largest = std::max(largest, delay);
    }
    // 200 uniform draws almost surely reach past half the ceiling; a stuck generator would not.
    CHECK(largest * 2 >= backoff_ceiling(attempt, settings));
  }
}

TEST_CASE("the same seed gives the same retry schedule", "[queue][backoff]") {
  std::mt19937_64 first(42);
  std::mt19937_64 second(42);
  const backoff_settings settings{};
  for (std::uint32_t attempt = 1; attempt <= 25; ++attempt) {
    CHECK(backoff_delay(attempt, settings, first) == backoff_delay(attempt, settings, second));
  }
}
