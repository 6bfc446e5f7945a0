#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/limits.hpp"
#include "service/log.hpp"

using namespace bankworker::service;
using bankworker::crypto::secret;

TEST_CASE("a log line is one JSON object with time, level, message and fields", "[worker][log]") {
  const std::string line = format_log_line(log_level::info, "2026-11-22T01:00:00.000Z", "job done",
                                           {{"kind", "plaid.sync"}, {"attempt", 2}, {"ok", true}});
  CHECK(line ==
        "{\"ts\":\"2026-11-22T01:00:00.000Z\",\"level\":\"info\",\"msg\":\"job done\",\"kind\":\"plaid.sync\","
        "\"attempt\":2,\"ok\":true}\n");
}

TEST_CASE("every string in a log line passes the redactor and secrets print as <redacted>", "[worker][log]") {
  const secret api_key = secret::copy_of("sk_live_abcdef123456");
  const secret plaid_secret = secret::copy_of("0123456789abcdefghij");
  const secret* known[] = {&plaid_secret};
  const std::string line = format_log_line(
      log_level::error, "t", "call failed for access-sandbox-de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d",
      {{"body", R"({"secret":"0123456789abcdefghij","card":"4242424242424242"})"},
       {"key", api_key},
       {"echo", "client sent 0123456789abcdefghij"}},
      known);
  CHECK(line.find("de3ce8ef") == std::string::npos);
  CHECK(line.find("0123456789abcdefghij") == std::string::npos);
  CHECK(line.find("abcdef123456") == std::string::npos);
  CHECK(line.find("4242424242424242") == std::string::npos);
  CHECK(line.find("\"key\":\"<redacted>\"") != std::string::npos);
  CHECK(line.find("access-sandbox-[REDACTED]") != std::string::npos);
}

TEST_CASE("control characters and quotes are escaped so a line stays one line", "[worker][log]") {
  const std::string line = format_log_line(log_level::warn, "t", "a\"b\nc\x01", {});
  CHECK(line == "{\"ts\":\"t\",\"level\":\"warn\",\"msg\":\"a\\\"b\\nc\\u0001\"}\n");
}

TEST_CASE("oversized values are cut and a line stops taking fields near the limit", "[worker][log]") {
  const std::string huge(bankworker::limits::log_line_bytes_max, 'x');
  const std::string line = format_log_line(log_level::info, "t", "m",
                                           {{"a", huge}, {"b", huge}, {"c", huge}, {"d", huge}, {"e", huge}});
  CHECK(line.size() <= bankworker::limits::log_line_bytes_max + 64);
  CHECK(line.find("…[cut]") != std::string::npos);
  CHECK(line.find("\"truncated\":true}") != std::string::npos);
  CHECK(line.back() == '\n');
}

TEST_CASE("the logger drops lines below its level and writes whole lines at or above it", "[worker][log]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  logger log(log_level::warn, fds[1]);
  log.info("hidden");
  log.warn("shown", {{"n", 1}});
  log.set_level(log_level::debug);
  log.debug("now shown");
  ::close(fds[1]);
  std::string out;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) out.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  CHECK(out.find("hidden") == std::string::npos);
  CHECK(out.find("\"msg\":\"shown\",\"n\":1}\n") != std::string::npos);
  CHECK(out.find("\"level\":\"debug\",\"msg\":\"now shown\"") != std::string::npos);
}

TEST_CASE("log levels parse from their names", "[worker][log]") {
  CHECK(parse_log_level("debug") == log_level::debug);
  CHECK(parse_log_level("warning") == log_level::warn);
  CHECK_FALSE(parse_log_level("verbose"));
}

TEST_CASE("lines carry sd-daemon priority prefixes only when the descriptor is the stream JOURNAL_STREAM names",
          "[worker][log]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  struct stat status {};
  REQUIRE(::fstat(fds[1], &status) == 0);
  const std::string ours = std::to_string(status.st_dev) + ":" + std::to_string(status.st_ino);
  CHECK(bankworker::service::is_journal_stream(fds[1], ours.c_str()));
  CHECK_FALSE(bankworker::service::is_journal_stream(fds[1], nullptr));
  CHECK_FALSE(bankworker::service::is_journal_stream(fds[1], (std::to_string(status.st_dev) + ":1").c_str()));
  CHECK_FALSE(bankworker::service::is_journal_stream(fds[1], (ours + "x").c_str()));
  CHECK_FALSE(bankworker::service::is_journal_stream(2, ours.c_str()));  // stderr is another file

  ::setenv("JOURNAL_STREAM", ours.c_str(), 1);
  {
    logger log(log_level::debug, fds[1]);
    log.error("e");
    log.warn("w");
    log.info("i");
    log.debug("d");
  }
  ::unsetenv("JOURNAL_STREAM");
  ::close(fds[1]);
  std::string out;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) out.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  std::vector<std::string> prefixes;
  for (std::size_t at = 0; at < out.size(); at = out.find('\n', at) + 1) prefixes.push_back(out.substr(at, 4));
  CHECK(prefixes == std::vector<std::string>{"<3>{", "<4>{", "<6>{", "<7>{"});
}
