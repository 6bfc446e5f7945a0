// Every leg that moves the Stripe balance is booked from its balance transaction (issue #16):
// charges, refunds, dispute withdrawals and reinstatements, presented in KWD and JPY and settled
// in USD. The invariant checked: stripe.clearing per currency equals, to the minor unit, the sum
// of the balance transactions' net; every entry balances per currency; nothing is doubled.
#include <catch2/catch.hpp>

#include <map>

#include "connectors/stripe/posting.hpp"

using namespace bankworker;
using stripe::plan_status;

namespace {

const core::currency_table currencies({{"USD", 2, true}, {"KWD", 3, true}, {"JPY", 0, true}});

std::string event(std::string_view id, std::string_view type, std::string_view object) {
  return R"({"id":")" + std::string(id) + R"(","object":"event","type":")" + std::string(type) +
         R"(","created":1700000000,"livemode":false,"data":{"object":)" + std::string(object) + "}}";
}

std::string bt(std::string_view id, std::int64_t amount, std::int64_t fee, std::string_view rate) {
  return R"({"id":")" + std::string(id) + R"(","object":"balance_transaction","amount":)" + std::to_string(amount) +
         R"(,"fee":)" + std::to_string(fee) + R"(,"net":)" + std::to_string(amount - fee) +
         R"(,"currency":"usd","exchange_rate":)" + std::string(rate) + "}";
}

// What the Stripe API answers, by path: the data a test scenario gives, served to the pure
// completion exactly as the I/O side would hand it over.
using stripe_answers = std::map<std::string, std::string>;

// plan → fetch what is listed → complete, at most fetch_rounds_max times (posting.hpp's contract).
stripe::posting_plan plan_and_settle(const std::string& event_json, const stripe_answers& answers) {
  simdjson::dom::parser parser;
  stripe::posting_plan plan = stripe::plan_postings(parser, event_json, currencies);
  for (std::size_t round = 0; round < stripe::fetch_rounds_max && plan.awaiting_settlement(); ++round) {
    std::vector<stripe::fetched_object> fetched;
    for (const stripe::fetch_request& request : plan.to_fetch) {
      const auto answer = answers.find(request.path);
      INFO("nothing at " << request.path);
      REQUIRE(answer != answers.end());
      fetched.push_back({request, answer->second});
    }
    plan = stripe::complete_plan(parser, std::move(plan), fetched, currencies);
  }
  INFO(plan.reason);
  REQUIRE(plan.status == plan_status::post);
  return plan;
}

// The ledger as post_entries keeps it: one entry per key; the same key again must carry the same
// lines (otherwise the database would refuse it as a conflict).
struct books {
  std::map<std::string, ledger::entry> entries;

  void post(const stripe::posting_plan& plan) {
    for (const ledger::entry& e : plan.entries) {
      INFO(e.idempotency_key);
      REQUIRE_FALSE(ledger::check_entry(e));
      std::map<std::string, std::int64_t> per_currency;
      for (const ledger::line& l : e.lines) per_currency[l.currency] += l.amount_minor;
      for (const auto& [currency, sum] : per_currency) CHECK(sum == 0);
      const auto [at, inserted] = entries.emplace(e.idempotency_key, e);
      if (!inserted) CHECK(at->second.lines == e.lines);
    }
  }

  std::map<std::string, std::int64_t> balance(std::string_view account) const {
    std::map<std::string, std::int64_t> out;
    for (const auto& [key, e] : entries) {
      for (const ledger::line& l : e.lines) {
        if (l.account == account) out[l.currency] += l.amount_minor;
      }
    }
    std::erase_if(out, [](const auto& item) { return item.second == 0; });
    return out;
  }
};

}  // namespace

TEST_CASE("a KWD charge settled in USD, partly refunded and disputed: clearing equals the balance transactions' net",
          "[stripe][posting][settlement]") {
  // 10.000 KWD charged (Stripe sends KWD with three decimals, as ISO), 2.720 refunded, 7.280 disputed.
  const stripe_answers stripe_api = {
      {"/v1/charges/ch_kwd",
       R"({"id":"ch_kwd","object":"charge","amount":10000,"currency":"kwd","balance_transaction":"txn_c"})"},
      {"/v1/balance_transactions/txn_c", bt("txn_c", 3245, 124, "3.245")},
      {"/v1/balance_transactions/txn_r", bt("txn_r", -883, 0, "3.2463")},
  };
  const std::int64_t charge_net = 3245 - 124, refund_net = -883, dispute_net = -2363 - 1500;
  books ledger;
  // payment_intent.succeeded, API 2022-11-15 on: latest_charge is an id, so the charge is fetched,
  // then its balance transaction.
  const auto paid = plan_and_settle(
      event("evt_1", "payment_intent.succeeded",
            R"({"id":"pi_kwd","object":"payment_intent","amount":10000,"amount_received":10000,"currency":"kwd",)"
            R"("created":1700000000,"latest_charge":"ch_kwd"})"),
      stripe_api);
  CHECK_FALSE(paid.awaiting_settlement());
  ledger.post(paid);
  const auto refunded = plan_and_settle(
      event("evt_2", "refund.created",
            R"({"id":"re_kwd","object":"refund","amount":2720,"currency":"kwd","charge":"ch_kwd",)"
            R"("status":"succeeded","created":1700000100,"balance_transaction":"txn_r"})"),
      stripe_api);
  ledger.post(refunded);
  // A dispute carries its balance transactions: nothing to fetch.
  const auto withdrawn = plan_and_settle(
      event("evt_3", "charge.dispute.funds_withdrawn",
            R"({"id":"dp_kwd","object":"dispute","amount":7280,"currency":"kwd","charge":"ch_kwd",)"
            R"("balance_transactions":[)" + bt("txn_d", -2363, 1500, "3.2459") + "]}"),
      {});
  ledger.post(withdrawn);

  CHECK(ledger.balance("stripe.clearing") == std::map<std::string, std::int64_t>{{"USD", charge_net + refund_net + dispute_net}});
  CHECK(ledger.balance("revenue") == std::map<std::string, std::int64_t>{{"KWD", -10000}});
  CHECK(ledger.balance("refunds") == std::map<std::string, std::int64_t>{{"KWD", 2720}});
  CHECK(ledger.balance("disputes") == std::map<std::string, std::int64_t>{{"KWD", 7280}});
  CHECK(ledger.balance("stripe.fees") == std::map<std::string, std::int64_t>{{"USD", 124}});
  CHECK(ledger.balance("dispute.fees") == std::map<std::string, std::int64_t>{{"USD", 1500}});
  // The refund is booked where Stripe's balance moved: -8.83 USD, not -2.720 KWD.
  REQUIRE(ledger.entries.contains("re_kwd:refund_fx"));
  CHECK(ledger.entries.at("re_kwd:refund_fx").lines ==
        std::vector<ledger::line>{{"stripe.clearing", -883, "USD"}, {"fx", 883, "USD"}, {"fx", -2720, "KWD"},
                                  {"stripe.clearing", 2720, "KWD"}});
  CHECK_THAT(ledger.entries.at("re_kwd:refund_fx").description, Catch::Contains("at 3.2463"));

  // charge.refunded for the same refund afterwards: the same keys and lines, nothing doubled.
  const std::size_t before = ledger.entries.size();
  ledger.post(plan_and_settle(
      event("evt_4", "charge.refunded",
            R"({"id":"ch_kwd","object":"charge","refunds":{"data":[{"id":"re_kwd","amount":2720,"currency":"kwd",)"
            R"("status":"succeeded","created":1700000100,"balance_transaction":"txn_r"}]}})"),
      stripe_api));
  CHECK(ledger.entries.size() == before);
}

TEST_CASE("a JPY charge settled in USD, partly refunded, disputed and reinstated: clearing equals the net",
          "[stripe][posting][settlement]") {
  const stripe_answers stripe_api = {{"/v1/balance_transactions/txn_jr", bt("txn_jr", -20730, 0, "0.00691")}};
  books ledger;
  // charge.succeeded with its balance transaction expanded: booked without a fetch.
  ledger.post(plan_and_settle(
      event("evt_1", "charge.succeeded",
            R"({"id":"ch_jpy","object":"charge","amount":100000,"amount_captured":100000,"currency":"jpy",)"
            R"("captured":true,"created":1700000000,"balance_transaction":)" + bt("txn_jc", 67000, 1973, "0.0067") + "}"),
      {}));
  ledger.post(plan_and_settle(
      event("evt_2", "charge.refunded",
            R"({"id":"ch_jpy","object":"charge","refunds":{"data":[{"id":"re_jpy","amount":30000,"currency":"jpy",)"
            R"("status":"succeeded","created":1700000100,"balance_transaction":"txn_jr"}]}})"),
      stripe_api));
  const std::string withdrawal = bt("txn_jd", -47358, 1500, "0.006765");
  const std::string reinstatement = bt("txn_jri", 47358, -1500, "0.006765");
  ledger.post(plan_and_settle(event("evt_3", "charge.dispute.funds_withdrawn",
                                    R"({"id":"dp_jpy","amount":70000,"currency":"jpy","balance_transactions":[)" +
                                        withdrawal + "]}"),
                              {}));
  std::int64_t net = (67000 - 1973) - 20730 - (47358 + 1500);
  CHECK(ledger.balance("stripe.clearing") == std::map<std::string, std::int64_t>{{"USD", net}});
  CHECK(ledger.balance("disputes") == std::map<std::string, std::int64_t>{{"JPY", 70000}});

  // Won: the withdrawal comes back and so does the dispute fee (a negative fee).
  ledger.post(plan_and_settle(event("evt_4", "charge.dispute.funds_reinstated",
                                    R"({"id":"dp_jpy","amount":70000,"currency":"jpy","balance_transactions":[)" +
                                        withdrawal + "," + reinstatement + "]}"),
                              {}));
  net += 47358 + 1500;
  CHECK(ledger.balance("stripe.clearing") == std::map<std::string, std::int64_t>{{"USD", net}});
  CHECK(ledger.balance("disputes").empty());
  CHECK(ledger.balance("dispute.fees").empty());
  CHECK(ledger.balance("revenue") == std::map<std::string, std::int64_t>{{"JPY", -100000}});
  CHECK(ledger.balance("refunds") == std::map<std::string, std::int64_t>{{"JPY", 30000}});
}

TEST_CASE("without an API key the presentment side posts, awaits settlement, and is completed later once",
          "[stripe][posting][settlement]") {
  simdjson::dom::parser parser;
  const std::string refund_event =
      event("evt_r", "refund.created",
            R"({"id":"re_1","amount":2720,"currency":"kwd","status":"succeeded","created":1,"balance_transaction":"txn_r"})");
  const auto waiting = stripe::plan_postings(parser, refund_event, currencies);
  REQUIRE(waiting.status == plan_status::post);
  CHECK(waiting.awaiting_settlement());
  REQUIRE(waiting.to_fetch.size() == 1);
  CHECK(waiting.to_fetch[0] == stripe::fetch_request{"balance_transaction", "txn_r", "/v1/balance_transactions/txn_r"});
  REQUIRE(waiting.entries.size() == 1);  // no rate guessed: only the refund in its own currency
  CHECK(waiting.entries[0].idempotency_key == "re_1:refund");
  CHECK_THAT(waiting.reason, Catch::Contains("1 settlement(s) to fetch"));

  books ledger;
  ledger.post(waiting);
  CHECK(ledger.balance("stripe.clearing") == std::map<std::string, std::int64_t>{{"KWD", -2720}});
  // The recovery job re-plans the stored event and completes it with the fetched transaction.
  const std::vector<stripe::fetched_object> fetched{{waiting.to_fetch[0], bt("txn_r", -883, 0, "3.2463")}};
  const auto completed =
      stripe::complete_plan(parser, stripe::plan_postings(parser, refund_event, currencies), fetched, currencies);
  REQUIRE(completed.status == plan_status::post);
  CHECK_FALSE(completed.awaiting_settlement());
  ledger.post(completed);
  CHECK(ledger.entries.size() == 2);
  CHECK(ledger.balance("stripe.clearing") == std::map<std::string, std::int64_t>{{"USD", -883}});
}

TEST_CASE("payment_intent.succeeded naming its charge by id asks for the charge, then its balance transaction",
          "[stripe][posting][settlement]") {
  simdjson::dom::parser parser;
  const auto plan = stripe::plan_postings(
      parser,
      event("evt_p", "payment_intent.succeeded",
            R"({"id":"pi_1","amount_received":500,"currency":"usd","created":1,"latest_charge":"ch_1"})"),
      currencies);
  REQUIRE(plan.to_fetch.size() == 1);
  CHECK(plan.to_fetch[0] == stripe::fetch_request{"charge", "ch_1", "/v1/charges/ch_1"});
  CHECK_FALSE(plan.balance_transaction_id);
  const std::vector<stripe::fetched_object> charge{
      {plan.to_fetch[0], R"({"id":"ch_1","object":"charge","balance_transaction":"txn_1"})"}};
  const auto next = stripe::complete_plan(parser, plan, charge, currencies);
  REQUIRE(next.to_fetch.size() == 1);
  CHECK(next.to_fetch[0].path == "/v1/balance_transactions/txn_1");
  CHECK(next.balance_transaction_id == "txn_1");
  CHECK(next.entries.size() == 1);
}

TEST_CASE("a fetched answer that contradicts its leg fails the plan", "[stripe][posting][settlement]") {
  simdjson::dom::parser parser;
  const std::string refund_event =
      event("evt_r", "refund.created",
            R"({"id":"re_1","amount":500,"currency":"usd","status":"succeeded","created":1,"balance_transaction":"txn_r"})");
  const auto plan = stripe::plan_postings(parser, refund_event, currencies);
  REQUIRE(plan.to_fetch.size() == 1);
  const auto with = [&](std::string body) {
    const std::vector<stripe::fetched_object> fetched{{plan.to_fetch[0], std::move(body)}};
    return stripe::complete_plan(parser, plan, fetched, currencies);
  };
  const auto into_balance = with(bt("txn_r", 500, 0, "null"));
  CHECK(into_balance.status == plan_status::fail);
  CHECK_THAT(into_balance.reason, Catch::Contains("non-negative"));
  CHECK(into_balance.entries.empty());
  CHECK_THAT(with(bt("txn_r", -499, 0, "null")).reason, Catch::Contains("differs"));
  CHECK_THAT(with(bt("txn_other", -500, 0, "null")).reason, Catch::Contains("names another object"));
  CHECK_THAT(with("{not json").reason, Catch::Contains("malformed JSON"));
  // The right answer settles it in the same currency: no conversion, no fee.
  const auto right = with(bt("txn_r", -500, 0, "null"));
  REQUIRE(right.status == plan_status::post);
  CHECK(right.entries.size() == 1);
  CHECK_FALSE(right.awaiting_settlement());
}

TEST_CASE("payouts and application fees are booked from their balance transactions", "[stripe][posting][settlement]") {
  const auto payout = plan_and_settle(
      event("evt_po", "payout.paid", R"({"id":"po_1","amount":10000,"currency":"usd","balance_transaction":"txn_po"})"),
      {{"/v1/balance_transactions/txn_po", bt("txn_po", -10000, 150, "null")}});
  REQUIRE(payout.entries.size() == 2);
  CHECK(payout.entries[1].idempotency_key == "po_1:payout_fee");
  CHECK(payout.entries[1].lines == std::vector<ledger::line>{{"stripe.fees", 150, "USD"}, {"stripe.clearing", -150, "USD"}});
  const auto fee = plan_and_settle(
      event("evt_af", "application_fee.created",
            R"({"id":"fee_1","amount":1000,"currency":"jpy","created":1,"balance_transaction":"txn_af"})"),
      {{"/v1/balance_transactions/txn_af", bt("txn_af", 670, 0, "0.0067")}});
  REQUIRE(fee.entries.size() == 2);
  CHECK(fee.entries[1].idempotency_key == "fee_1:application_fee_fx");
}
