// Every log field and every external-call record passes the redactor, so its cost is paid on hot
// paths. This measures redaction throughput over a realistic mix (a Plaid /transactions/sync
// response fragment, a log message) and the per-line cost of formatting a log line.
//
// Usage: redact_bench [--iterations N]   (default 200000)

#include <sodium.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "crypto/redact.hpp"
#include "service/log.hpp"

namespace {

constexpr std::string_view sync_fragment =
    R"({"account_id":"BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp","amount":72.1,"iso_currency_code":"USD",)"
    R"("unofficial_currency_code":null,"category_id":"13005032","date":"2026-11-20","authorized_date":"2026-11-19",)"
    R"("merchant_name":"Uber","name":"Uber 063015 SF**POOL**","payment_channel":"online","pending":false,)"
    R"("pending_transaction_id":null,"transaction_id":"lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje",)"
    R"("personal_finance_category":{"primary":"TRANSPORTATION","detailed":"TRANSPORTATION_TAXIS_AND_RIDE_SHARES"}})";
constexpr std::string_view message =
    "sync page applied for access-sandbox-de3ce8ef-33f8-4e7a-a7c4-2e6bb7d61f8d: 500 added, card 4242424242424242";

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  long iterations = 200'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) == "--iterations") iterations = std::strtol(argv[i + 1], nullptr, 10);
  }
  if (iterations <= 0) {
    std::fputs("redact_bench: --iterations must be a positive number\n", stderr);
    return 2;
  }

  std::string out;
  out.reserve(4096);
  std::size_t redactions = 0;
  auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
    out.clear();
    redactions += bankworker::crypto::redact_into(sync_fragment, out);
    redactions += bankworker::crypto::redact_into(message, out);
  }
  const double redact_s = seconds_since(start);
  const double bytes = static_cast<double>(iterations) * static_cast<double>(sync_fragment.size() + message.size());
  const double mb_per_s = bytes / redact_s / 1e6;

  std::size_t line_bytes = 0;
  start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
    line_bytes += bankworker::service::format_log_line(bankworker::service::log_level::info, "2026-11-22T01:00:00.000Z",
                                                      message, {{"tenant", "7fe07284-c9bf-416c-a821-a9eec7dd0d46"},
                                                                {"rows", 500},
                                                                {"endpoint", "/transactions/sync"}})
                      .size();
  }
  const double format_s = seconds_since(start);
  const double lines_per_s = static_cast<double>(iterations) / format_s;

  std::printf("redaction: %.1f MB/s over %ld iterations (%zu values masked)\n", mb_per_s, iterations, redactions);
  std::printf("log lines: %.0f lines/s formatted and redacted (%.0f ns/line, %zu bytes)\n", lines_per_s,
              1e9 / lines_per_s, line_bytes);
  std::printf("{\"bench\":\"redact\",\"redact_mb_per_s\":%.1f,\"log_lines_per_s\":%.0f}\n", mb_per_s, lines_per_s);
  return 0;
}
