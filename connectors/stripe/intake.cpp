#include "connectors/stripe/intake.hpp"

#include <array>
#include <string>

#include <simdjson.h>

#include "connectors/stripe/posting_step.hpp"
#include "crypto/random.hpp"
#include "db/connection_problem.hpp"

namespace bankworker::stripe {

namespace {

// What the committer sends for one event that posts now: its state, and its awaited legs.
void add_final(intake_plan& out, const char* state, const settlement_summary& settlement) {
  out.states.add(state);
  if (settlement.awaited.empty()) {
    out.legs.add(std::nullopt);
    out.fees.add(std::nullopt);
    out.fxs.add(std::nullopt);
    return;
  }
  std::string legs, fees, fxs;
  for (const awaited_leg& leg : settlement.awaited) {
    if (!legs.empty()) {
      legs.push_back(',');
      fees.push_back(',');
      fxs.push_back(',');
    }
    legs += leg.leg_key;  // Stripe ids and leg names: never a comma (settlement_marks.cpp)
    fees += leg.keys.fee;
    fxs += leg.keys.fx;
  }
  out.legs.add(legs);
  out.fees.add(fees);
  out.fxs.add(fxs);
}

void add_received(intake_plan& out) {
  out.states.add(std::nullopt);
  out.legs.add(std::nullopt);
  out.fees.add(std::nullopt);
  out.fxs.add(std::nullopt);
}

// Whether a poster would post this decision now with the same effect: entries it can check here,
// and no leg settled (clearing other events' marks is the posters' work).
bool posts_alone(const posting_decision& decision) {
  if (!decision.settlement.settled.empty()) return false;
  for (const ledger::entry& entry : decision.entries) {
    if (ledger::check_entry(entry)) return false;
  }
  return true;
}

}  // namespace

intake_planner::intake_planner(const core::currency_table& currencies, service::logger& log, bool api_configured,
                               std::function<void(const poster_counts&)> counted)
    : currencies_(currencies), log_(log), api_configured_(api_configured), counted_(std::move(counted)) {}

intake_plan intake_planner::plan(std::span<const inbox_event* const> events) const {
  thread_local simdjson::dom::parser parser;
  intake_plan out;
  std::vector<posting_decision> decisions;
  decisions.reserve(events.size());
  std::array<bool, posting_lanes> lane_left{};  // an earlier event of the lane is left to the posters
  std::size_t entry_count = 0;
  for (const inbox_event* event : events) {
    bool& left = lane_left.at(event->posting_lane);
    decisions.push_back(left ? posting_decision{}
                             : decide_posting(parser, event->event_id, event->body, currencies_, api_configured_));
    posting_decision& decision = decisions.back();
    if (!left && decision.what == posting_step::post && posts_alone(decision)) {
      add_final(out, "posted", decision.settlement);
      entry_count += decision.entries.size();
    } else if (!left && decision.what == posting_step::ignore) {
      add_final(out, "ignored", {});
    } else {
      left = true;
      add_received(out);
      decision.entries.clear();
    }
  }
  const std::vector<core::uuid> ids = crypto::time_ordered_uuids(entry_count);
  std::size_t next = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    for (const ledger::entry& entry : decisions[i].entries) {
      out.entry_events.add(events[i]->event_id);
      out.entries.add(entry, ids[next++]);
    }
  }
  return out;
}

void intake_planner::committed(std::uint64_t posted, std::uint64_t ignored) const {
  if (counted_ && (posted != 0 || ignored != 0)) counted_(poster_counts{.posted = posted, .ignored = ignored});
}

void intake_planner::fell_back(std::string_view why) const {
  // The server's first line says what failed (an entry conflict names its key).
  log_.warn("stripe batch not posted at intake; stored for the posters instead", {{"reason", db::server_message(why)}});
}

}  // namespace bankworker::stripe
