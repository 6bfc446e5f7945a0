#pragma once
// Waiting for a running worker to have done something, and counting what it did, in tests that
// drive whole processes (run_pgtest, webhooks_connect_pgtest).

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include <pqxx/pqxx>

namespace bankworker::test {

// True once `condition` holds, polled every 50 ms; false if it still does not after `timeout`.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

// The one number a `SELECT count(*) …` (or any one-value query) answers, in its own transaction.
inline long count(pqxx::connection& connection, const std::string& sql) {
  pqxx::work tx(connection);
  return tx.exec1(sql)[0].as<long>();
}

// The value of one series in a /metrics text (`name{labels}` exactly as printed), 0 when absent.
inline std::uint64_t metric_value(const std::string& text, const std::string& series) {
  const std::size_t at = text.find("\n" + series + " ");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + series.size() + 2));
}

}  // namespace bankworker::test
