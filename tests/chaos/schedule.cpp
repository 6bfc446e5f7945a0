#include "tests/chaos/schedule.hpp"

#include <algorithm>
#include <random>

namespace bankworker::chaos {

namespace {

// The mixed load: one action every 120 ms on average, of these kinds in these proportions.
constexpr double load_mean_gap_ms = 120;
struct weighted {
  action_kind kind;
  unsigned weight;
};
constexpr weighted load_mix[] = {
    {action_kind::mutate, 34},        {action_kind::stripe_event, 30}, {action_kind::sync, 10},
    {action_kind::plaid_webhook, 5},  {action_kind::link, 5},          {action_kind::plaid_fault, 8},
    {action_kind::stripe_api_fault, 3}, {action_kind::revoke, 2},
};

}  // namespace

std::string_view name_of(action_kind kind) {
  switch (kind) {
    case action_kind::link: return "link";
    case action_kind::mutate: return "bank change";
    case action_kind::sync: return "sync request";
    case action_kind::plaid_webhook: return "plaid webhook";
    case action_kind::plaid_fault: return "plaid fault";
    case action_kind::plaid_slow: return "plaid slow/failing period";
    case action_kind::stripe_event: return "stripe event";
    case action_kind::stripe_api_fault: return "stripe api fault";
    case action_kind::revoke: return "revocation";
    case action_kind::rotate_key: return "key rotation";
    case action_kind::rewrap: return "rewrap";
    case action_kind::kill_worker: return "kill -9";
    case action_kind::restart_postgres: return "postgres restart";
  }
  return "?";
}

std::vector<action> make_schedule(const schedule_settings& settings) {
  std::mt19937_64 random(settings.seed);
  const auto uniform_ms = [&](double low_ms, double high_ms) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::uniform_real_distribution<double>(low_ms, high_ms)(random)));
  };
  const double end_ms = static_cast<double>(std::chrono::milliseconds(settings.duration).count());
  std::vector<action> schedule;

  // The mixed load.
  unsigned weights_total = 0;
  for (const auto& w : load_mix) weights_total += w.weight;
  std::exponential_distribution<double> gap(1.0 / load_mean_gap_ms);
  for (double t = gap(random); t < end_ms; t += gap(random)) {
    unsigned roll = static_cast<unsigned>(random() % weights_total);
    action_kind kind = load_mix[0].kind;
    for (const auto& w : load_mix) {
      if (roll < w.weight) {
        kind = w.kind;
        break;
      }
      roll -= w.weight;
    }
    schedule.push_back({std::chrono::milliseconds(static_cast<std::int64_t>(t)), kind, random(), random(), {}});
  }
  // kill -9 a worker every 4–10 s; it comes back 0.2–3 s later.
  for (double t = 2'000 + uniform_ms(0, 2'000).count(); t < end_ms; t += uniform_ms(4'000, 10'000).count()) {
    schedule.push_back({std::chrono::milliseconds(static_cast<std::int64_t>(t)), action_kind::kill_worker, random(), 0,
                        uniform_ms(200, 3'000)});
  }
  // Plaid slow or failing for a while, every 10–25 s.
  for (double t = uniform_ms(3'000, 10'000).count(); t < end_ms; t += uniform_ms(10'000, 25'000).count()) {
    schedule.push_back({std::chrono::milliseconds(static_cast<std::int64_t>(t)), action_kind::plaid_slow, random(), random(), {}});
  }
  // PostgreSQL restarts once, in the middle third, down for 1–4 s.
  schedule.push_back({uniform_ms(end_ms / 3, 2 * end_ms / 3), action_kind::restart_postgres, 0, 0, uniform_ms(1'000, 4'000)});
  // A key rotation at about a quarter and at three quarters, each rewrapped a moment later.
  for (const double share : {0.25, 0.75}) {
    const auto at = uniform_ms(end_ms * (share - 0.1), end_ms * (share + 0.1));
    const std::uint64_t tenant = random() % settings.tenants;
    schedule.push_back({at, action_kind::rotate_key, tenant, 0, {}});
    schedule.push_back({at + uniform_ms(500, 3'000), action_kind::rewrap, tenant, 0, {}});
  }
  std::stable_sort(schedule.begin(), schedule.end(), [](const action& a, const action& b) { return a.at < b.at; });
  return schedule;
}

std::uint64_t fingerprint(const std::vector<action>& schedule) {
  // FNV-1a over every field.
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  const auto mix = [&](std::uint64_t value) {
    for (int i = 0; i < 8; ++i) {
      hash ^= (value >> (8 * i)) & 0xff;
      hash *= 0x100000001b3ULL;
    }
  };
  for (const auto& a : schedule) {
    mix(static_cast<std::uint64_t>(a.at.count()));
    mix(static_cast<std::uint64_t>(a.kind));
    mix(a.pick);
    mix(a.detail);
    mix(static_cast<std::uint64_t>(a.pause.count()));
  }
  return hash;
}

}  // namespace bankworker::chaos
