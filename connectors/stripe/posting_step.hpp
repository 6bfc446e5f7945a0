#pragma once
// What the posting rules make of one stored event from its body alone: the decision the posters
// take for each event they claim (poster.cpp) and the inbox's committer takes for each event it
// stores (intake.hpp). Pure: no I/O.

#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "connectors/stripe/posting.hpp"
#include "core/currency.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::stripe {

enum class posting_step {
  post,      // its entries post now (a leg whose balance transaction is unknown awaits settlement)
  ignore,    // no money moved: the event is marked ignored
  hand_off,  // its posting needs the Stripe API, and one is configured: a stripe.post job fetches
  retry,     // the plan failed: retried after a backoff, `error` says why
  dead,      // it needs an operator (a thin event with no API configured): dead-lettered, `error` says why
};

struct posting_decision {
  posting_step what = posting_step::retry;
  std::vector<ledger::entry> entries;  // post
  std::string error;                   // retry, dead
  settlement_summary settlement;       // post: which legs it settles, which it leaves awaiting
};

posting_decision decide_posting(simdjson::dom::parser& parser, std::string_view event_id, std::string_view body,
                                const core::currency_table& currencies, bool api_configured);

}  // namespace bankworker::stripe
