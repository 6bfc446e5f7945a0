#include "connectors/stripe/posting_step.hpp"

#include "connectors/stripe/thin_event.hpp"

namespace bankworker::stripe {

posting_decision decide_posting(simdjson::dom::parser& parser, std::string_view event_id, std::string_view body,
                                const core::currency_table& currencies, bool api_configured) {
  posting_plan plan = plan_postings(parser, body, currencies);
  switch (plan.status) {
    case plan_status::post:
      if (api_configured && plan.awaiting_settlement()) return {posting_step::hand_off, {}, {}, {}};
      // Without an API the presentment side posts and the event is marked awaiting settlement
      // (settlement_marks.hpp) until a later event brings the balance transaction.
      return {posting_step::post, std::move(plan.entries), {}, settlement_summary_of(plan)};
    case plan_status::ignore:
      // A thin event is ignored by the snapshot rules until its related object is fetched.
      if (std::optional<std::string> waiting = unfetched_thin_money(parser, body)) {
        if (api_configured) return {posting_step::hand_off, {}, {}, {}};
        return {posting_step::dead, {}, std::move(*waiting), {}};
      }
      return {posting_step::ignore, {}, {}, {}};
    case plan_status::fail:
      break;
  }
  return {posting_step::retry, {}, "event " + std::string(event_id) + ": " + plan.reason, {}};
}

}  // namespace bankworker::stripe
