#pragma once
// The Stripe webhook storm: every event the chaos run triggers goes into this outbox once per
// delivery it must get (twice or three times for duplicates), and sender threads deliver them
// in random order (reordering across events and within one), each signed afresh with the
// Connect platform secret, to a random worker's POST /webhooks/stripe. Anything but 2xx —
// a killed worker, 503 while PostgreSQL restarts — stays in the outbox and is sent again later,
// as Stripe retries. So every event is, in the end, acknowledged as many times as planned.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace bankworker::chaos {

struct storm_counts {
  std::uint64_t sent = 0;       // HTTP requests made
  std::uint64_t accepted = 0;   // answered 2xx
  std::uint64_t refused = 0;    // answered otherwise (503 during the outage, 5xx)
  std::uint64_t unanswered = 0; // no HTTP answer (a killed worker, connection refused)
};

class webhook_storm {
 public:
  // `worker_urls`: the base URLs of every worker slot (a slot's process may be down).
  webhook_storm(std::vector<std::string> worker_urls, std::string platform_secret, std::uint64_t seed,
                std::size_t threads);
  webhook_storm(const webhook_storm&) = delete;
  webhook_storm& operator=(const webhook_storm&) = delete;
  ~webhook_storm();

  // Queues `body` (the event's JSON) to be acknowledged `copies` times.
  void add(std::string event_id, std::string body, unsigned copies);
  // Deliveries not yet acknowledged.
  std::size_t pending() const;
  storm_counts counts() const;

 private:
  struct delivery {
    std::string event_id;
    std::string body;
    unsigned copies_left = 1;
    std::chrono::steady_clock::time_point not_before;
  };
  void send_loop(std::uint64_t seed);

  const std::vector<std::string> worker_urls_;
  const std::string platform_secret_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<delivery> outbox_;
  bool stopping_ = false;
  storm_counts counts_;
  std::vector<std::thread> threads_;
};

}  // namespace bankworker::chaos
