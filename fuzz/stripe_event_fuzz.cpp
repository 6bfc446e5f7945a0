// Stripe event parsing and the posting rules on arbitrary bytes. The input is split at its first
// NUL byte (which no JSON text contains): the event before it, a balance transaction after it (as
// GET /v1/balance_transactions/{id} would answer). Beyond "no crash" and no exception escaping
// (plan_postings, complete_plan, parse_balance_transaction and fee_entries document none), checks
// what must hold for any input:
// - a failed or ignored plan carries a reason and plans no entry; a failed one no balance
//   transaction to fetch;
// - every planned entry passes ledger::check_entry, and, recomputed here in 128-bit arithmetic,
//   has 2..entry_lines_max lines, none zero or INT64_MIN (so negating a line cannot overflow),
//   in a currency of the table, summing to zero in each currency;
// - a charge's gross entry debits stripe.clearing and credits revenue with the same amount;
// - planning the same bytes again (the parser reused, as the job does) gives the same plan;
// - a balance transaction that parses satisfies amount - fee == net (fee signed: a dispute fee
//   handed back is negative), and fee_entries on it and the planned gross entry either fails with
//   a reason and no entries or plans balanced entries;
// - the bytes after the NUL given as the answer to each fetch the plan lists, complete_plan gives
//   a consistent plan that still names its every leg's presentment entry.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "connectors/stripe/posting.hpp"
#include "ledger/ledger.hpp"

using namespace bankworker;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

// The tests' currencies plus the ones whose Stripe unit differs from ISO's (ISK, MGA, HUF) and an
// unofficial one with a large exponent, so conversion runs in both directions.
const core::currency_table& table() {
  static const core::currency_table currencies({{"USD", 2, true},
                                                {"EUR", 2, true},
                                                {"GBP", 2, true},
                                                {"JPY", 0, true},
                                                {"BHD", 3, true},
                                                {"ISK", 0, true},
                                                {"MGA", 2, true},
                                                {"HUF", 2, true},
                                                {"BTC", 8, false}});
  return currencies;
}

void require_well_formed(const ledger::entry& e) {
  require(!ledger::check_entry(e).has_value());
  require(e.lines.size() >= 2);
  require(e.lines.size() <= ledger::entry_lines_max);
  std::map<std::string, __int128> sums;
  for (const ledger::line& l : e.lines) {
    require(l.amount_minor != 0);
    require(l.amount_minor != INT64_MIN);
    require(table().find(l.currency) != nullptr);
    sums[l.currency] += l.amount_minor;
  }
  for (const auto& [currency, sum] : sums) require(sum == 0);
}

void require_consistent(const stripe::posting_plan& plan) {
  switch (plan.status) {
    case stripe::plan_status::fail:
      require(!plan.reason.empty());
      require(plan.entries.empty());
      require(!plan.balance_transaction_id.has_value());
      require(plan.to_fetch.empty());
      return;
    case stripe::plan_status::ignore:
      require(!plan.reason.empty());
      require(plan.entries.empty());
      return;
    case stripe::plan_status::post:
      for (const ledger::entry& e : plan.entries) require_well_formed(e);
      return;
  }
  std::abort();  // a status outside the enumeration
}

bool same_plan(const stripe::posting_plan& a, const stripe::posting_plan& b) {
  if (a.status != b.status || a.reason != b.reason || a.event_id != b.event_id || a.event_type != b.event_type ||
      a.account != b.account || a.balance_transaction_id != b.balance_transaction_id || a.charge_id != b.charge_id ||
      a.entries.size() != b.entries.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    const ledger::entry& x = a.entries[i];
    const ledger::entry& y = b.entries[i];
    if (x.idempotency_key != y.idempotency_key || x.description != y.description ||
        x.occurred_at_s != y.occurred_at_s || x.source != y.source || x.lines != y.lines) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  static simdjson::dom::parser parser;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view event = input.substr(0, nul);
  // Never a null view: the job always hands over a std::string's bytes.
  static const char nothing[] = "";
  const std::string_view fetched = nul == std::string_view::npos ? std::string_view(nothing, 0) : input.substr(nul + 1);

  const stripe::posting_plan plan = stripe::plan_postings(parser, event, table());
  require_consistent(plan);
  require(same_plan(plan, stripe::plan_postings(parser, event, table())));
  if (plan.balance_transaction_id) require(plan.charge_id.has_value());

  if (plan.status == stripe::plan_status::post && plan.awaiting_settlement()) {
    std::vector<stripe::fetched_object> answers;
    for (const stripe::fetch_request& request : plan.to_fetch) answers.push_back({request, std::string(fetched)});
    const stripe::posting_plan completed = stripe::complete_plan(parser, plan, answers, table());
    require_consistent(completed);
    if (completed.status == stripe::plan_status::post) {
      require(completed.legs.size() == plan.legs.size());
      require(completed.entries.size() >= plan.legs.size());
    }
  }

  std::string error;
  const auto bt = stripe::parse_balance_transaction(parser, fetched, error);
  if (!bt) {
    require(!error.empty());
    return 0;
  }
  require(static_cast<__int128>(bt->amount) - bt->fee == bt->net);

  // The charge's gross entry, as the stripe.fees job receives it.
  if (plan.status != stripe::plan_status::post || !plan.charge_id) return 0;
  const ledger::entry* gross = nullptr;
  for (const ledger::entry& e : plan.entries) {
    if (e.idempotency_key == *plan.charge_id + ":gross") gross = &e;
  }
  require(gross != nullptr);
  require(gross->lines.size() == 2);
  require(gross->lines[0].account == "stripe.clearing");
  require(gross->lines[0].amount_minor > 0);
  require(gross->lines[1].account == "revenue");
  require(gross->lines[1].amount_minor == -gross->lines[0].amount_minor);

  const stripe::posting_plan fees = stripe::fee_entries(*gross, *plan.charge_id, *bt, table());
  require_consistent(fees);
  require(fees.status != stripe::plan_status::ignore);
  return 0;
}
