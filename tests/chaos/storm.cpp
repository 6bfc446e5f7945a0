#include "tests/chaos/storm.hpp"

#include <chrono>

#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/http_client.hpp"

namespace bankworker::chaos {

namespace {

// After a refusal, the same delivery waits at least this long (Stripe waits far longer).
constexpr std::chrono::milliseconds redelivery_delay{250};
// A bound on the outbox: the schedule adds a few events per second and they drain faster.
constexpr std::size_t outbox_deliveries_max = 100'000;

}  // namespace

webhook_storm::webhook_storm(std::vector<std::string> worker_urls, std::string platform_secret, std::uint64_t seed,
                             std::size_t threads)
    : worker_urls_(std::move(worker_urls)), platform_secret_(std::move(platform_secret)) {
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this, seed, i] { send_loop(seed + i); });
}

webhook_storm::~webhook_storm() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void webhook_storm::add(std::string event_id, std::string body, unsigned copies) {
  {
    std::lock_guard lock(mutex_);
    if (outbox_.size() >= outbox_deliveries_max) throw std::runtime_error("the webhook outbox is full (outbox_deliveries_max)");
    outbox_.push_back({std::move(event_id), std::move(body), copies, std::chrono::steady_clock::now()});
  }
  wake_.notify_one();
}

std::size_t webhook_storm::pending() const {
  std::lock_guard lock(mutex_);
  std::size_t total = 0;
  for (const auto& d : outbox_) total += d.copies_left;
  return total;
}

storm_counts webhook_storm::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

void webhook_storm::send_loop(std::uint64_t seed) {
  std::mt19937_64 random(seed);
  for (;;) {
    std::string event_id, body;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping_ || !outbox_.empty(); });
      if (stopping_) return;
      const auto now = std::chrono::steady_clock::now();
      std::vector<std::size_t> ready;
      for (std::size_t i = 0; i < outbox_.size(); ++i) {
        if (outbox_[i].not_before <= now) ready.push_back(i);
      }
      if (ready.empty()) continue;
      // A random ready delivery: events overtake each other, and copies of one event race.
      delivery& d = outbox_[ready[random() % ready.size()]];
      event_id = d.event_id;
      body = d.body;
      d.not_before = now + redelivery_delay;  // not picked again while this copy is in flight
      ++counts_.sent;
    }
    const std::string& worker = worker_urls_[random() % worker_urls_.size()];
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const auto answer = test::http_post(worker + "/webhooks/stripe", body,
                                        {"Stripe-Signature: " + sim::stripe::simulator::sign(body, platform_secret_, now_s)});
    std::lock_guard lock(mutex_);
    if (answer.status >= 200 && answer.status < 300) {
      ++counts_.accepted;
      for (std::size_t i = 0; i < outbox_.size(); ++i) {
        if (outbox_[i].event_id != event_id) continue;
        if (--outbox_[i].copies_left == 0) outbox_.erase(outbox_.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    } else if (answer.status == 0) {
      ++counts_.unanswered;
    } else {
      ++counts_.refused;
    }
  }
}

}  // namespace bankworker::chaos
