// Per-sender budgets (worker/source_budget.cpp): one sender cannot spend another's.
#include <catch2/catch.hpp>

#include "service/source_budget.hpp"

using bankworker::service::source_budget;

namespace {
const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
}

TEST_CASE("a source spends only its own budget; another source still gets its own", "[webhook][budget]") {
  source_budget budget({.per_source_max = 3, .total_max = 100, .window = std::chrono::seconds(60)});
  int granted = 0;
  for (int i = 0; i < 1'000; ++i) granted += budget.try_take("203.0.113.9", t0) ? 1 : 0;
  CHECK(granted == 3);
  CHECK(budget.try_take("52.21.26.131", t0));
  CHECK(budget.try_take("203.0.113.9", t0 + std::chrono::seconds(60)));  // a new window
}

TEST_CASE("the total budget bounds all sources together", "[webhook][budget]") {
  source_budget budget({.per_source_max = 2, .total_max = 5, .window = std::chrono::seconds(60)});
  int granted = 0;
  for (int i = 0; i < 100; ++i) granted += budget.try_take("198.51.100." + std::to_string(i), t0) ? 1 : 0;
  CHECK(granted == 5);
}

TEST_CASE("IPv6 senders share their /64's budget and at most sources_max sources are remembered", "[webhook][budget]") {
  CHECK(source_budget::source_key("2001:db8:1:2:aaaa::1") == source_budget::source_key("2001:db8:1:2:bbbb::7"));
  CHECK(source_budget::source_key("2001:db8:1:2::1") != source_budget::source_key("2001:db8:1:3::1"));
  CHECK(source_budget::source_key("::ffff:192.0.2.1") == "192.0.2.1");
  source_budget budget({.per_source_max = 1, .total_max = 1'000'000, .window = std::chrono::seconds(60), .sources_max = 8});
  CHECK(budget.try_take("2001:db8:1:2::1", t0));
  CHECK_FALSE(budget.try_take("2001:db8:1:2::2", t0));
  for (int i = 0; i < 100; ++i) budget.try_take("192.0.2." + std::to_string(i), t0);
  CHECK(budget.sources() == 8);
}
