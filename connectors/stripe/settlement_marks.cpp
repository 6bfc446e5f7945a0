// The awaiting-settlement marks on Stripe event rows; settlement_marks.hpp says when they are set
// and cleared.
#include "connectors/stripe/settlement_marks.hpp"

#include <map>
#include <optional>
#include <set>

#include "connectors/stripe/store.hpp"
#include "core/assert.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "core/json_text.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"
#include "queue/queue.hpp"

namespace bankworker::stripe {

namespace {

// Legs as one text per event ('ch_1:gross,re_2:refund'; NULL: none awaited): a Postgres array
// cannot be ragged. Leg keys are Stripe ids ([A-Za-z0-9_]) and a leg name, never a comma.
// The events' new states and their awaited legs in ONE update of each row (the rows carry their
// 2 KB bodies: a second update per event cost 8 ms per 250-event batch under webhook_load). A
// NULL state leaves the state; legs: NULL leaves the mark, '' clears it, 'ch_1:gross,…' sets it.
constexpr db::statement mark_events_sql{"stripe_mark_events",
    "UPDATE bankworker.stripe_events s SET state = coalesce(m.state, s.state),"
    " posted_at = CASE WHEN m.state IS NULL THEN s.posted_at WHEN m.state = 'posted' THEN now() END,"
    " settlement_awaited = CASE WHEN m.legs IS NULL THEN s.settlement_awaited"
    "                           ELSE string_to_array(nullif(m.legs, ''), ',') END,"
    " settlement_awaited_since = CASE WHEN m.legs IS NULL THEN s.settlement_awaited_since WHEN m.legs = '' THEN NULL"
    "                                 ELSE coalesce(s.settlement_awaited_since, now()) END"
    " FROM unnest($1::text[], $2::text[], $3::text[]) AS m(event_id, state, legs) WHERE s.event_id = m.event_id"};
constexpr db::statement clear_settled_sql{"stripe_clear_settlement_awaited",
    "UPDATE bankworker.stripe_events s"
    " SET settlement_awaited = nullif(array(SELECT k FROM unnest(s.settlement_awaited) AS k WHERE k <> ALL($1::text[])),"
    "                                 '{}'::text[]),"
    "     settlement_awaited_since = CASE WHEN s.settlement_awaited <@ $1::text[] THEN NULL"
    "                                     ELSE s.settlement_awaited_since END"
    " WHERE s.settlement_awaited_since IS NOT NULL AND s.settlement_awaited && $1::text[]"};
constexpr db::statement awaiting_events_sql{"stripe_awaiting_settlement_events",
    "SELECT event_id, to_char(settlement_awaited_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " array_to_string(settlement_awaited, ',') FROM bankworker.stripe_events"
    " WHERE settlement_awaited_since IS NOT NULL ORDER BY settlement_awaited_since, event_id LIMIT $1"};

}  // namespace

std::vector<std::string> split_leg_keys(std::string_view text) {
  std::vector<std::string> legs;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    legs.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return legs;
}

void settlement_marks::add(const std::string& event_id, const settlement_summary& summary) {
  settled_.insert(settled_.end(), summary.settled.begin(), summary.settled.end());
  // An event with unsettled legs is written even when write() finds them all settled elsewhere:
  // it may be a re-post of an event marked before, whose mark must go.
  if (!summary.awaited.empty()) awaiting_.emplace_back(event_id, summary.awaited);
}

void settlement_marks::write(pqxx::work& tx, std::span<const std::string> event_ids,
                             std::span<const std::string> states) const {
  BW_ASSERT(event_ids.size() == states.size());
  const std::set<std::string, std::less<>> settled(settled_.begin(), settled_.end());
  // Each awaiting event's legs still unsettled, as the statement's text ('' for none left).
  std::map<std::string, std::string, std::less<>> legs_of;
  if (!awaiting_.empty()) {
    std::vector<std::string> keys;
    for (const auto& [event_id, legs] : awaiting_) {
      for (const awaited_leg& leg : legs) {
        keys.push_back(leg.keys.fee);
        keys.push_back(leg.keys.fx);
      }
    }
    // Entries posted before, or earlier in this transaction: those legs are settled.
    const std::set<std::string, std::less<>> existing = existing_entries(tx, keys);
    for (const auto& [event_id, legs] : awaiting_) {
      std::string& text = legs_of[event_id];
      for (const awaited_leg& leg : legs) {
        if (existing.contains(leg.keys.fee) || existing.contains(leg.keys.fx)) continue;
        if (settled.contains(leg.leg_key)) continue;
        if (!text.empty()) text.push_back(',');
        text += leg.leg_key;
      }
    }
  }
  if (!event_ids.empty() || !legs_of.empty()) {
    db::array_text ids, state_texts, legs_texts;
    const auto add = [&](const std::string& id, std::optional<std::string_view> state) {
      ids.add(id);
      state_texts.add(state);
      const auto found = legs_of.find(id);
      if (found == legs_of.end()) {
        legs_texts.add(std::nullopt);
        return;
      }
      legs_texts.add(std::string_view(found->second));
      legs_of.erase(found);
    };
    for (std::size_t i = 0; i < event_ids.size(); ++i) add(event_ids[i], std::string_view(states[i]));
    // Awaiting events whose state this transaction does not change (none today) keep their state.
    while (!legs_of.empty()) add(std::string(legs_of.begin()->first), std::nullopt);
    db::exec_replanned(tx, mark_events_sql, ids.finish(), state_texts.finish(), legs_texts.finish());
  }
  if (!settled.empty()) {
    db::array_text keys;
    for (const std::string& key : settled) keys.add(key);
    db::exec_statement(tx, clear_settled_sql, keys.finish());
  }
}

std::vector<awaiting_event> awaiting_settlement_events(pqxx::transaction_base& tx, std::uint32_t limit) {
  std::vector<awaiting_event> events;
  for (const auto& row : db::exec_statement(tx, awaiting_events_sql, static_cast<long>(limit))) {
    events.push_back({row[0].as<std::string>(), row[1].as<std::string>(), split_leg_keys(row[2].as<std::string>())});
  }
  return events;
}

std::size_t enqueue_settlement_completions(pqxx::work& tx, const core::uuid& tenant, std::uint32_t limit) {
  std::vector<queue::new_job> jobs;
  for (const awaiting_event& event : awaiting_settlement_events(tx, limit)) {
    queue::new_job job;
    job.tenant = tenant;
    job.kind = std::string(stripe_post_kind);
    std::string payload = "{\"event_id\":";
    core::append_json_string(event.event_id, payload);
    job.payload_json = payload + "}";
    job.unique_key = "stripe.settle:" + event.event_id;
    jobs.push_back(std::move(job));
  }
  return queue::enqueue(tx, jobs).size();
}

}  // namespace bankworker::stripe
