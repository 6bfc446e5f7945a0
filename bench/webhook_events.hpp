#pragma once
// What the webhook benchmarks share (webhook_load, scale_bench): pre-signed ~2 KB Stripe events,
// the keep-alive loader that sends them to one or several servers, and the small helpers around
// a `bankworker run` child (its secret files, its readiness).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/child.hpp"

namespace bankworker::bench {

// The events: one shared ~2 KB prefix (everything a payment intent carries that does not identify
// it) and, per event, a fixed-length tail with its payment intent, charge and event ids, so every
// request has the same Content-Length and only the tail and the signature differ. Forged events'
// ids say so ("evt_wlf…"), so the check that none was stored is one query.
class event_set {
 public:
  static constexpr std::size_t body_bytes = 2048;
  static constexpr std::size_t signature_hex_bytes = 64;

  // Signs `count` events at `timestamp_s` with `secret`, `forged_percent` % of them with another.
  event_set(std::size_t count, std::size_t forged_percent, std::string_view secret, std::int64_t timestamp_s);

  std::size_t size() const noexcept { return forged_.size(); }
  std::size_t forged_count() const noexcept { return forged_count_; }
  bool forged(std::size_t i) const noexcept { return forged_[i]; }
  std::size_t body_size() const noexcept { return prefix_.size() + tail_bytes_; }
  std::int64_t timestamp_s() const noexcept { return timestamp_s_; }
  const std::string& prefix() const noexcept { return prefix_; }
  std::string_view tail(std::size_t i) const noexcept {
    return std::string_view(tails_).substr(i * tail_bytes_, tail_bytes_);
  }
  std::string_view signature(std::size_t i) const noexcept {
    return std::string_view(signatures_).substr(i * signature_hex_bytes, signature_hex_bytes);
  }
  std::string body(std::size_t i) const { return prefix_ + std::string(tail(i)); }

 private:
  static std::string tail_of(std::size_t i, bool forged);

  std::int64_t timestamp_s_;
  std::string prefix_;
  std::size_t tail_bytes_ = 0;
  std::string tails_;
  std::string signatures_;
  std::vector<bool> forged_;
  std::size_t forged_count_ = 0;
};

// Signs `count` events as of now; prints the signing rate (signing is not on the measured path).
event_set sign_events(std::size_t count, std::size_t forged_percent, std::string_view secret);

struct load_result {
  std::vector<std::uint32_t> latencies_us;  // of 2xx answers
  std::size_t sent = 0;
  std::size_t accepted = 0;         // 2xx
  std::size_t forged_rejected = 0;  // forged events answered 400
  std::size_t forged_accepted = 0;  // forged events answered anything but 400 (must stay 0)
  std::size_t other_status = 0;     // genuine events answered anything but 2xx (503 under overload, say)
  std::size_t connection_errors = 0;
  std::map<unsigned, std::size_t> statuses;
  double seconds = 0;
  bool ran_out = false;
};

// Drives `connections` keep-alive connections on one thread for `duration`, connection c to
// ports[c % ports.size()] on 127.0.0.1, each sending one event to `path` and waiting for its
// answer, and records every 2xx latency.
load_result run_load(const event_set& events, const std::string& path, const std::vector<std::uint16_t>& ports,
                     std::size_t connections, std::chrono::seconds duration);

// The latency at `fraction` of sorted microseconds, in milliseconds (0 when there are none).
double percentile_ms(const std::vector<std::uint32_t>& sorted, double fraction);

// GET `path` (bankworker's /readyz, the peer's /healthz) until it answers 200; false when the
// process exits or a minute passes first.
bool wait_until_ready(std::uint16_t port, const std::string& path, test::child_process& process);

// Hex of `bytes` random bytes (keys and secrets of the bench's own).
std::string random_hex(std::size_t bytes);
// A file only its owner may read (the worker refuses key and secret files open to others).
void write_private_file(const std::filesystem::path& path, const std::string& text);
std::string trimmed(std::string text);
// /proc/loadavg's three averages.
std::string load_average();

// A scratch database made ready for `bankworker run` with the real CLI: migrated (as the owner
// the URL names), a runtime login of its own, a tenant named `tenant_name` and its webhook secret
// (the file `secret_file`). `env` is the environment every later command and `run` take.
struct worker_setup {
  std::map<std::string, std::string> env;
  std::string tenant;
};
worker_setup set_up_worker(const std::string& bankworker, const std::string& bench_url, const std::string& runtime_login,
                           std::map<std::string, std::string> env, const std::string& tenant_name,
                           const std::filesystem::path& secret_file);

// Drops a login the bench made (after its database is gone); says so on stderr when it cannot.
void drop_login(const std::string& cluster_url, const std::string& login);

}  // namespace bankworker::bench
