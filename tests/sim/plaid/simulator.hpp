#pragma once
// The Plaid simulator's state and behaviour, free of network code: the server hands it a request
// (path, body, the few headers that matter) and writes back the reply it returns. Everything is
// deterministic from the seed except request ids' order under concurrency and the webhook keys.
//
// Plaid endpoints behave as Plaid's docs and OpenAPI spec (2020-09-14) say; /sim/… is the control
// API for tests and the demo (README.md beside this file lists it with examples).

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace bankworker::sim::plaid {

namespace limits {
// Requests are small JSON objects; control calls that add transactions stay far below this too.
inline constexpr std::size_t request_body_bytes_max = 1 << 20;
inline constexpr std::size_t request_header_bytes_max = 16 << 10;
// Plaid's documented bounds for /transactions/sync `count`.
inline constexpr std::int64_t sync_count_default = 100;
inline constexpr std::int64_t sync_count_max = 500;
// Plaid's cursors are at most 256 characters of base64; ours are well under.
inline constexpr std::size_t cursor_bytes_max = 256;
// Scale: enough for the 100 × 1,000 benchmark with room to spare, small enough to stay in memory.
inline constexpr std::size_t items_max = 10'000;
inline constexpr std::size_t transactions_total_max = 2'000'000;
inline constexpr std::size_t transactions_per_call_max = 100'000;
// Bookkeeping the tests read back.
inline constexpr std::size_t calls_recorded_max = 1 << 20;
inline constexpr std::size_t faults_max = 256;
inline constexpr std::size_t webhooks_received_max = 256;
inline constexpr std::int64_t fault_delay_ms_max = 120'000;
inline constexpr std::int64_t fault_times_max = 1'000'000;
// Enforced /transactions/sync rate limits (Plaid production: 2,500/min per client, 50/min per
// item); each limit is also the bound of the window of timestamps kept for it.
inline constexpr std::uint32_t sync_calls_per_min_max = 100'000;
static_assert(sync_count_max * 2 < 2'000, "a full page must stay under the connector's page_items_max");
}  // namespace limits

struct simulator_settings {
  std::uint64_t seed = 1;
  std::string client_id = "bankworker-sim-client";
  std::string secret = "bankworker-sim-secret";
  std::size_t items_initial = 0;            // created at start (the scale knob)
  std::size_t transactions_per_item = 120;  // history of every new item
  std::chrono::seconds public_token_ttl{30 * 60};  // Plaid: public tokens expire after 30 minutes
  // /transactions/sync calls allowed in any 60 s, per item and per client; 0 turns a limit off
  // (the default, so benchmarks are not throttled). Past a limit: 429 TRANSACTIONS_SYNC_LIMIT.
  std::uint32_t sync_calls_per_item_per_min = 0;
  std::uint32_t sync_calls_per_client_per_min = 0;
};

struct request_view {
  std::string_view path;
  std::string_view body;
  std::string_view client_id_header;     // PLAID-CLIENT-ID
  std::string_view secret_header;        // PLAID-SECRET
  std::string_view verification_header;  // Plaid-Verification (only the webhook inbox reads it)
};

enum class reply_shape {
  normal,
  truncated,  // Content-Length promises the whole body, half is sent, then the connection closes
  malformed,  // 200 with a body that is not JSON
};

struct reply {
  unsigned status = 200;
  std::string body;
  reply_shape shape = reply_shape::normal;
  std::chrono::milliseconds delay{0};  // wait this long before answering
};

// A webhook the server must POST (from a thread that is not an io_context thread).
struct webhook_delivery {
  std::string url;
  std::string body;
  std::string verification;  // Plaid-Verification header value
  std::string item_id;
  std::string webhook_code;
};

struct delivery_result {
  long status = 0;    // HTTP status the receiver answered, 0 when there was no answer
  std::string error;  // transport error, empty when an answer came
};

struct outcome {
  reply response;
  std::optional<webhook_delivery> webhook;  // set: deliver, then answer with delivered(…)
};

class simulator {
 public:
  simulator(simulator_settings settings, std::int64_t now_s);
  ~simulator();
  simulator(const simulator&) = delete;
  simulator& operator=(const simulator&) = delete;

  // Thread-safe (one mutex: calls are short, pages are pre-serialised).
  outcome handle(const request_view& request, std::int64_t now_s);

  // The reply to a /sim/webhooks/send call once its delivery finished.
  reply delivered(const webhook_delivery& delivery, const delivery_result& result);

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace bankworker::sim::plaid
