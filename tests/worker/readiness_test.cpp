// /readyz's check cache: however often it is asked, the database check runs at most once per
// interval, and a check in flight is never doubled.
#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "worker/readiness.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
using bankworker::worker::readiness;

namespace {

// A clock the test moves by hand.
struct manual_clock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
  readiness::clock_fn fn() {
    return [this] { return now; };
  }
};

std::string ask(asio::io_context& io, readiness& ready) {
  auto answer = asio::co_spawn(io, ready.unready_reason(), asio::use_future);
  io.restart();
  io.run();
  return answer.get();
}

}  // namespace

TEST_CASE("readiness asks the database at most once per interval however often it is asked", "[readiness]") {
  asio::io_context io;
  manual_clock clock;
  int database_checks = 0;
  std::string database_says;
  readiness ready(
      [&]() -> asio::awaitable<std::string> {
        ++database_checks;
        co_return database_says;
      },
      1'000ms, clock.fn());
  for (int i = 0; i < 10'000; ++i) CHECK(ask(io, ready).empty());
  CHECK(database_checks == 1);
  // The schema loses a migration: the cached answer stands until the interval has passed.
  database_says = "schema older than this binary";
  clock.now += 999ms;
  CHECK(ask(io, ready).empty());
  CHECK(database_checks == 1);
  clock.now += 1ms;
  CHECK(ask(io, ready) == "schema older than this binary");
  CHECK(database_checks == 2);
  CHECK(ready.checks() == 2);
}

TEST_CASE("callers during a check in flight get the previous answer instead of a second check", "[readiness]") {
  asio::io_context io;
  manual_clock clock;
  int database_checks = 0;
  readiness ready(
      [&]() -> asio::awaitable<std::string> {
        ++database_checks;
        asio::steady_timer slow(co_await asio::this_coro::executor, 50ms);
        co_await slow.async_wait(asio::use_awaitable);
        co_return database_checks == 1 ? std::string() : std::string("database unreachable");
      },
      1'000ms, clock.fn());
  // Before any answer: 100 callers at once, one check; the others learn it is not checked yet.
  std::vector<std::future<std::string>> first;
  for (int i = 0; i < 100; ++i) first.push_back(asio::co_spawn(io, ready.unready_reason(), asio::use_future));
  io.run();
  int answered_ready = 0;
  for (auto& answer : first) {
    const std::string reason = answer.get();
    if (reason.empty()) ++answered_ready;
    else CHECK(reason == "readiness not checked yet");
  }
  CHECK(answered_ready == 1);
  CHECK(database_checks == 1);
  // Later, while the second check is in flight, the callers get the first answer.
  clock.now += 1'000ms;
  std::vector<std::future<std::string>> second;
  for (int i = 0; i < 100; ++i) second.push_back(asio::co_spawn(io, ready.unready_reason(), asio::use_future));
  io.restart();
  io.run();
  int answered_unready = 0;
  for (auto& answer : second) {
    if (answer.get() == "database unreachable") ++answered_unready;
  }
  CHECK(answered_unready == 1);
  CHECK(database_checks == 2);
}
