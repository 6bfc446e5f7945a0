// Replay memory for Plaid webhook tokens (worker/webhook_replays.cpp).
#include <catch2/catch.hpp>

#include "service/webhook_replays.hpp"

using bankworker::service::webhook_replays;
using admission = webhook_replays::admission;

namespace {
const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
}

TEST_CASE("a token accepted once is a replay inside its window and acceptable after it", "[webhook][replay]") {
  webhook_replays replays(std::chrono::seconds(330));
  CHECK(replays.admit("token-a", t0) == admission::first);
  CHECK(replays.admit("token-a", t0 + std::chrono::seconds(329)) == admission::replay);
  CHECK(replays.admit("token-b", t0) == admission::first);
  // Past the window the age check refuses the token anyway; the memory is free again.
  CHECK(replays.admit("token-a", t0 + std::chrono::seconds(330)) == admission::first);
  CHECK(replays.size() == 1);
}

TEST_CASE("a released token may come again, and a full memory refuses rather than forgets", "[webhook][replay]") {
  webhook_replays replays(std::chrono::seconds(330), 3);
  CHECK(replays.admit("a", t0) == admission::first);
  replays.release("a");
  CHECK(replays.admit("a", t0) == admission::first);
  CHECK(replays.admit("b", t0) == admission::first);
  CHECK(replays.admit("c", t0) == admission::first);
  CHECK(replays.admit("d", t0) == admission::full);
  CHECK(replays.admit("a", t0) == admission::replay);  // nothing was forgotten to make room
  CHECK(replays.admit("d", t0 + std::chrono::seconds(330)) == admission::first);
}
