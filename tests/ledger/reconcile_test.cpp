// The matching rules as a table (ledger/reconcile.hpp): candidates in, decision and reason out.
#include <catch2/catch.hpp>

#include "ledger/reconcile.hpp"

using namespace bankworker;
using ledger::deposit;
using ledger::payout_facts;
using ledger::payout_status;

namespace {

constexpr ledger::epoch_day friday = 19'783;  // 2024-03-01
constexpr ledger::epoch_day monday = friday + 3;

payout_facts payout(std::int64_t amount = 10'000, std::string currency = "USD") {
  payout_facts facts;
  facts.payout_id = "po_1";
  facts.currency = std::move(currency);
  facts.amount_minor = amount;
  facts.expected_day = friday;
  facts.tolerance_minor = 100;
  return facts;
}

deposit bank(std::string id, std::int64_t amount, ledger::epoch_day day, std::string name = "STRIPE TRANSFER",
             std::string currency = "USD") {
  deposit row;
  row.transaction_id = std::move(id);
  row.currency = std::move(currency);
  row.amount_minor = amount;
  row.booked_day = day;
  row.name = std::move(name);
  return row;
}

ledger::match_decision decide(const payout_facts& p, std::vector<deposit> candidates, ledger::epoch_day today = friday) {
  return ledger::decide_payout(p, candidates, {}, today);
}

}  // namespace

TEST_CASE("business days skip the weekend in both directions", "[ledger][reconcile]") {
  CHECK(ledger::business_days_between(friday, monday) == 1);
  CHECK(ledger::business_days_between(monday, friday) == -1);
  CHECK(ledger::business_days_between(friday, friday) == 0);
  CHECK(ledger::business_days_between(friday, friday + 6) == 4);  // the next Thursday
  CHECK(ledger::business_days_between(friday, friday + 7) == 5);
}

TEST_CASE("an exact deposit on the day is matched, with its reason", "[ledger][reconcile]") {
  const auto d = decide(payout(), {bank("t1", 10'000, friday)});
  CHECK(d.status == payout_status::matched);
  CHECK(d.transaction_id == "t1");
  CHECK(d.difference_minor == 0);
  CHECK_THAT(d.reason, Catch::Contains("exact") && Catch::Contains("STRIPE"));
}

TEST_CASE("a deposit the Monday after a Friday payout is one business day off and matches", "[ledger][reconcile]") {
  const auto d = decide(payout(), {bank("t1", 10'000, monday, "ACH CREDIT")});
  CHECK(d.status == payout_status::matched);
  CHECK_THAT(d.reason, Catch::Contains("1 business day(s) after"));
}

TEST_CASE("deposits outside the window, in another currency, outflows or removed ones never match",
          "[ledger][reconcile]") {
  auto removed = bank("t5", 10'000, friday);
  removed.removed = true;
  const auto d = decide(payout(), {bank("t1", 10'000, friday + 7), bank("t2", 10'000, friday - 3),
                                   bank("t3", 10'000, friday, "STRIPE", "EUR"), bank("t4", -10'000, friday), removed});
  CHECK(d.status == payout_status::pending);
  CHECK_FALSE(d.transaction_id);
}

TEST_CASE("two equal deposits are a tie left for review, naming both", "[ledger][reconcile]") {
  const auto d = decide(payout(), {bank("t2", 10'000, friday), bank("t1", 10'000, friday)});
  CHECK(d.status == payout_status::review);
  CHECK_FALSE(d.transaction_id);
  CHECK(d.candidates == std::vector<std::string>{"t1", "t2"});
}

TEST_CASE("descriptor evidence breaks what amount and date cannot", "[ledger][reconcile]") {
  auto p = payout();
  p.descriptor = "ACME PAYOUT";
  const auto by_trace = decide(p, {bank("t1", 10'000, friday, "STRIPE"), bank("t2", 10'000, friday, "STRIPE PO_1")});
  CHECK(by_trace.transaction_id == "t2");
  const auto by_descriptor = decide(p, {bank("t1", 10'000, friday, "STRIPE"), bank("t2", 10'000, friday, "Acme Payout")});
  CHECK(by_descriptor.transaction_id == "t2");
  const auto by_stripe = decide(p, {bank("t1", 10'000, friday, "ACH"), bank("t2", 10'000, friday, "Stripe")});
  CHECK(by_stripe.transaction_id == "t2");
}

TEST_CASE("equal amounts in two currencies: only the payout's currency counts", "[ledger][reconcile]") {
  const auto d = decide(payout(10'000, "EUR"), {bank("t1", 10'000, friday), bank("t2", 10'000, friday, "STRIPE", "EUR")});
  CHECK(d.status == payout_status::matched);
  CHECK(d.transaction_id == "t2");
}

TEST_CASE("short by one minor unit is short with the difference, never matched", "[ledger][reconcile]") {
  const auto d = decide(payout(), {bank("t1", 9'999, friday)});
  CHECK(d.status == payout_status::short_paid);
  CHECK(d.transaction_id == "t1");
  CHECK(d.difference_minor == -1);
  // At the tolerance or beyond, it is no candidate at all.
  CHECK(decide(payout(), {bank("t1", 9'900, friday)}).status == payout_status::pending);
  auto strict = payout();
  strict.tolerance_minor = 0;
  CHECK(decide(strict, {bank("t1", 9'999, friday)}).status == payout_status::pending);
}

TEST_CASE("an exact deposit outranks a short one", "[ledger][reconcile]") {
  const auto d = decide(payout(), {bank("t1", 9'999, friday, "STRIPE PO_1"), bank("t2", 10'000, monday, "ACH")});
  CHECK(d.transaction_id == "t2");
  CHECK(d.status == payout_status::matched);
}

TEST_CASE("unmatched past the window is missing; a failed payout is failed or, with a deposit, a conflict",
          "[ledger][reconcile]") {
  CHECK(decide(payout(), {}, friday + 6).status == payout_status::pending);   // Thursday: 4 business days
  CHECK(decide(payout(), {}, friday + 7).status == payout_status::missing);   // Friday: 5
  auto failed = payout();
  failed.failed = true;
  CHECK(decide(failed, {}, friday + 30).status == payout_status::failed);
  const auto conflict = decide(failed, {bank("t1", 10'000, friday)});
  CHECK(conflict.status == payout_status::conflict);
  CHECK(conflict.transaction_id == "t1");
}

TEST_CASE("a pending bank row is a candidate like a posted one", "[ledger][reconcile]") {
  auto pending = bank("t1", 10'000, friday);
  pending.pending = true;
  const auto d = decide(payout(), {pending});
  CHECK(d.status == payout_status::matched);
  CHECK_THAT(d.reason, Catch::Contains("pending"));
}

TEST_CASE("one deposit settles one payout: the earlier payout takes it, a tie resolves once the other took its own",
          "[ledger][reconcile]") {
  auto first = payout();
  auto second = payout();
  second.payout_id = "po_2";
  second.expected_day = friday + 4;  // Tuesday
  // Both deposits fit both payouts; each is nearest to one of them.
  const std::vector<std::vector<deposit>> candidates = {
      {bank("t1", 10'000, friday), bank("t2", 10'000, friday + 4)},
      {bank("t1", 10'000, friday), bank("t2", 10'000, friday + 4)}};
  const std::vector<payout_facts> payouts = {first, second};
  const auto d = ledger::decide_payouts(payouts, candidates, {}, friday);
  CHECK(d[0].transaction_id == "t1");
  CHECK(d[1].transaction_id == "t2");

  // The first payout ties between t1 and t2 (same day); the second can only be t2 (by trace id).
  auto third = payout();
  third.payout_id = "po_3";
  const std::vector<std::vector<deposit>> tied = {
      {bank("t1", 10'000, friday, "ACH"), bank("t2", 10'000, friday, "ACH")},
      {bank("t2", 10'000, friday, "ACH PO_3")}};
  const std::vector<payout_facts> two = {first, third};
  const auto resolved = ledger::decide_payouts(two, tied, {}, friday);
  CHECK(resolved[1].transaction_id == "t2");
  CHECK(resolved[0].transaction_id == "t1");
  CHECK(resolved[0].status == payout_status::matched);
}

TEST_CASE("deciding twice gives the same decisions", "[ledger][reconcile]") {
  const std::vector<payout_facts> payouts = {payout()};
  const std::vector<std::vector<deposit>> candidates = {{bank("t1", 10'000, friday), bank("t2", 10'000, friday)}};
  CHECK(ledger::decide_payouts(payouts, candidates, {}, friday) == ledger::decide_payouts(payouts, candidates, {}, friday));
}

TEST_CASE("status names round-trip", "[ledger][reconcile]") {
  for (const std::string_view name : {"pending", "matched", "short", "missing", "review", "conflict", "failed"}) {
    const auto status = ledger::parse_payout_status(name);
    REQUIRE(status);
    CHECK(ledger::to_string(*status) == name);
  }
  CHECK_FALSE(ledger::parse_payout_status("settled"));
}
