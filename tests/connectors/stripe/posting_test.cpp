// Posting rules as a table: event in, entries out. Amounts are Stripe's integers.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <string_view>

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/posting.hpp"

using namespace bankworker;
using stripe::plan_status;

namespace {

const core::currency_table currencies({{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true}, {"BHD", 3, true},
                                       {"ISK", 0, true}, {"MGA", 2, true}, {"GBP", 2, true}});

stripe::posting_plan plan(const std::string& json) {
  simdjson::dom::parser parser;
  return stripe::plan_postings(parser, json, currencies);
}

std::string event(std::string_view type, std::string_view object, std::string_view extra = "") {
  return R"({"id":"evt_1","object":"event","type":")" + std::string(type) + R"(","created":1700000000,)" +
         std::string(extra) + R"("livemode":false,"data":{"object":)" + std::string(object) + "}}";
}

const std::string charge =
    R"({"id":"ch_1","object":"charge","amount":2000,"amount_captured":2000,"currency":"usd","captured":true,)"
    R"("created":1699999990,"balance_transaction":"txn_1"})";
const std::string payment_intent =
    R"({"id":"pi_1","object":"payment_intent","amount":2000,"amount_received":2000,"currency":"usd",)"
    R"("created":1699999980,"latest_charge":"ch_1"})";

using lines = std::vector<ledger::line>;

}  // namespace

TEST_CASE("charge.succeeded and payment_intent.succeeded plan the same gross entry", "[stripe][posting]") {
  const auto from_charge = plan(event("charge.succeeded", charge));
  const auto from_intent = plan(event("payment_intent.succeeded", payment_intent));
  REQUIRE(from_charge.status == plan_status::post);
  REQUIRE(from_intent.status == plan_status::post);
  REQUIRE(from_charge.entries.size() == 1);
  REQUIRE(from_intent.entries.size() == 1);
  CHECK(from_charge.entries[0].idempotency_key == "ch_1:gross");
  CHECK(from_intent.entries[0].idempotency_key == "ch_1:gross");
  CHECK(from_charge.entries[0].lines == lines{{"stripe.clearing", 2000, "USD"}, {"revenue", -2000, "USD"}});
  CHECK(from_intent.entries[0].lines == from_charge.entries[0].lines);
  CHECK(from_charge.balance_transaction_id == "txn_1");
  CHECK(from_charge.charge_id == "ch_1");
}

TEST_CASE("a payment intent from before latest_charge keys on its first listed charge", "[stripe][posting]") {
  const auto result = plan(event("payment_intent.succeeded",
                                 R"({"id":"pi_2","amount_received":500,"currency":"eur","created":1,)"
                                 R"("charges":{"data":[{"id":"ch_old","balance_transaction":"txn_old"}]}})"));
  REQUIRE(result.status == plan_status::post);
  CHECK(result.entries[0].idempotency_key == "ch_old:gross");
  CHECK(result.balance_transaction_id == "txn_old");
}

TEST_CASE("an uncaptured charge posts nothing until it is captured", "[stripe][posting]") {
  std::string uncaptured = charge;
  uncaptured.replace(uncaptured.find("\"captured\":true"), 15, "\"captured\":false");
  const auto result = plan(event("charge.succeeded", uncaptured));
  CHECK(result.status == plan_status::ignore);
  CHECK_THAT(result.reason, Catch::Contains("not captured"));
  CHECK(plan(event("charge.captured", charge)).entries.at(0).idempotency_key == "ch_1:gross");
}

TEST_CASE("refunds post once whichever event reports them, and a failed refund is reversed", "[stripe][posting]") {
  const std::string refund = R"({"id":"re_1","amount":500,"currency":"usd","charge":"ch_1","status":"succeeded","created":1700000100})";
  const auto created = plan(event("refund.created", refund));
  REQUIRE(created.status == plan_status::post);
  REQUIRE(created.entries.size() == 1);
  CHECK(created.entries[0].idempotency_key == "re_1:refund");
  CHECK(created.entries[0].lines == lines{{"refunds", 500, "USD"}, {"stripe.clearing", -500, "USD"}});

  const auto refunded = plan(event("charge.refunded", R"({"id":"ch_1","refunds":{"data":[)" + refund + "]}}"));
  REQUIRE(refunded.status == plan_status::post);
  CHECK(refunded.entries.at(0).idempotency_key == "re_1:refund");
  CHECK(refunded.entries.at(0).lines == created.entries[0].lines);

  std::string failed_refund = refund;
  failed_refund.replace(failed_refund.find("succeeded"), 9, "failed");
  const auto failed = plan(event("refund.failed", failed_refund));
  REQUIRE(failed.entries.size() == 2);
  CHECK(failed.entries[0].idempotency_key == "re_1:refund");
  CHECK(failed.entries[1].idempotency_key == "re_1:refund_failed");
  CHECK(failed.entries[1].lines == lines{{"stripe.clearing", 500, "USD"}, {"refunds", -500, "USD"}});
}

TEST_CASE("a payout moves clearing to bank and a failed payout moves it back", "[stripe][posting]") {
  const std::string payout = R"({"id":"po_1","amount":10000,"currency":"usd","status":"paid"})";
  const auto paid = plan(event("payout.paid", payout));
  REQUIRE(paid.entries.size() == 1);
  CHECK(paid.entries[0].lines == lines{{"bank", 10000, "USD"}, {"stripe.clearing", -10000, "USD"}});
  const auto failed = plan(event("payout.failed", payout));
  REQUIRE(failed.entries.size() == 2);
  CHECK(failed.entries[0].idempotency_key == "po_1:payout");
  CHECK(failed.entries[1].idempotency_key == "po_1:payout_failed");
  CHECK(failed.entries[1].lines == lines{{"stripe.clearing", 10000, "USD"}, {"bank", -10000, "USD"}});
}

TEST_CASE("a payout's entry carries its arrival date and statement descriptor for reconciliation, and nothing else does",
          "[stripe][posting][reconcile]") {
  using metadata = std::vector<std::pair<std::string, std::string>>;
  const std::string payout = R"({"id":"po_1","amount":10000,"currency":"usd","status":"paid",)"
                             R"("arrival_date":1700179200,"statement_descriptor":"ACME PAYOUT"})";
  const auto paid = plan(event("payout.paid", payout));
  REQUIRE(paid.entries.size() == 1);
  CHECK(paid.entries[0].metadata == metadata{{"arrival_date", "1700179200"}, {"statement_descriptor", "ACME PAYOUT"}});
  // The reversal of a failed payout is not a payout to reconcile: it carries none.
  const auto failed = plan(event("payout.failed", payout));
  REQUIRE(failed.entries.size() == 2);
  CHECK(failed.entries[0].metadata == paid.entries[0].metadata);
  CHECK(failed.entries[1].metadata.empty());
  // Stripe's nulls (payout.json fixture: statement_descriptor null) and a descriptor with a
  // control character (PostgreSQL's jsonb refuses \u0000) leave the field out.
  CHECK(plan(event("payout.paid", R"({"id":"po_1","amount":1,"currency":"usd","arrival_date":null,)"
                                  R"("statement_descriptor":null})"))
            .entries[0]
            .metadata.empty());
  CHECK(plan(event("payout.paid", R"({"id":"po_1","amount":1,"currency":"usd","statement_descriptor":"A\u0000B"})"))
            .entries[0]
            .metadata.empty());
  // An arrival date that is no unix time fails the plan instead of posting a wrong expected day.
  const auto bad = plan(event("payout.paid", R"({"id":"po_1","amount":1,"currency":"usd","arrival_date":"soon"})"));
  CHECK(bad.status == plan_status::fail);
  CHECK_THAT(bad.reason, Catch::Contains("arrival_date"));
  CHECK(plan(event("payout.paid", R"({"id":"po_1","amount":1,"currency":"usd","arrival_date":-1})")).status ==
        plan_status::fail);
  // Charges carry none.
  CHECK(plan(event("charge.succeeded", charge)).entries[0].metadata.empty());
}

// The withdrawal's fee is its own entry (dp_…:withdrawn_fee) since issue #16, so that a withdrawal
// posted before its balance transaction was known is completed by adding the fee, not by changing
// the withdrawal.
TEST_CASE("dispute withdrawals carry their fee; reinstatements reverse the amount", "[stripe][posting]") {
  const std::string dispute =
      R"({"id":"dp_1","amount":2000,"currency":"usd","balance_transactions":[{"id":"txn_d","amount":-2000,"fee":1500,"net":-3500,"currency":"usd"}]})";
  const auto withdrawn = plan(event("charge.dispute.funds_withdrawn", dispute));
  REQUIRE(withdrawn.entries.size() == 2);
  CHECK(withdrawn.entries[0].idempotency_key == "dp_1:withdrawn");
  CHECK(withdrawn.entries[0].lines == lines{{"disputes", 2000, "USD"}, {"stripe.clearing", -2000, "USD"}});
  CHECK(withdrawn.entries[1].idempotency_key == "dp_1:withdrawn_fee");
  CHECK(withdrawn.entries[1].lines == lines{{"dispute.fees", 1500, "USD"}, {"stripe.clearing", -1500, "USD"}});
  CHECK_FALSE(withdrawn.awaiting_settlement());
  const auto reinstated = plan(event("charge.dispute.funds_reinstated", dispute));
  CHECK(reinstated.entries.at(0).lines == lines{{"stripe.clearing", 2000, "USD"}, {"disputes", -2000, "USD"}});
  CHECK(plan(event("charge.dispute.created", dispute)).status == plan_status::ignore);
  CHECK(plan(event("charge.dispute.closed", dispute)).status == plan_status::ignore);
}

TEST_CASE("Connect application fees and their refunds post to the platform's ledger", "[stripe][posting]") {
  const auto created = plan(event("application_fee.created",
                                  R"({"id":"fee_1","amount":150,"currency":"usd","created":1700000000})",
                                  R"("account":"acct_9",)"));
  REQUIRE(created.status == plan_status::post);
  CHECK(created.account == "acct_9");
  CHECK(created.entries.at(0).lines == lines{{"stripe.clearing", 150, "USD"}, {"application_fees", -150, "USD"}});
  const auto refunded = plan(event("application_fee.refunded",
                                   R"({"id":"fee_1","amount":150,"currency":"usd","refunds":{"data":[{"id":"fr_1","amount":50,"currency":"usd"}]}})"));
  CHECK(refunded.entries.at(0).idempotency_key == "fr_1:application_fee_refund");
  CHECK(refunded.entries.at(0).lines == lines{{"application_fees", 50, "USD"}, {"stripe.clearing", -50, "USD"}});
}

TEST_CASE("Stripe's currency units become ISO minor units exactly: JPY, BHD, ISK, MGA", "[stripe][posting]") {
  CHECK(stripe::to_minor_units(1500, "jpy", currencies).minor == 1500);  // zero-decimal at both
  CHECK(stripe::to_minor_units(12340, "bhd", currencies).minor == 12340);  // three-decimal at both
  const auto isk = stripe::to_minor_units(100000, "isk", currencies);  // Stripe: two decimals; ISO: none
  REQUIRE(isk.ok);
  CHECK(isk.minor == 1000);
  CHECK_THAT(stripe::to_minor_units(100050, "isk", currencies).error, Catch::Contains("more precision"));
  CHECK(stripe::to_minor_units(700, "mga", currencies).minor == 70000);  // Stripe: zero-decimal; ISO: two
  CHECK_THAT(stripe::to_minor_units(1, "xyz", currencies).error, Catch::Contains("unknown currency 'XYZ'"));
  CHECK_FALSE(stripe::to_minor_units(INT64_MAX, "mga", currencies).ok);

  const auto yen = plan(event("charge.succeeded",
                              R"({"id":"ch_y","amount":1500,"currency":"jpy","captured":true,"created":1})"));
  CHECK(yen.entries.at(0).lines.at(0) == ledger::line{"stripe.clearing", 1500, "JPY"});
}

TEST_CASE("events with a missing or inconsistent money object fail and plan nothing", "[stripe][posting]") {
  CHECK_THAT(plan(event("charge.succeeded", R"({"id":"ch_1","currency":"usd","captured":true,"created":1})")).reason,
             Catch::Contains("charge.amount is missing"));
  CHECK_THAT(plan(event("charge.succeeded", R"({"id":"ch_1","amount":12.5,"currency":"usd","captured":true,"created":1})")).reason,
             Catch::Contains("not an integer"));
  CHECK_THAT(plan(event("payout.paid", R"({"id":"po_1","amount":-5,"currency":"usd"})")).reason,
             Catch::Contains("negative"));
  CHECK_THAT(plan(event("payment_intent.succeeded", R"({"id":"pi_1","amount_received":5,"currency":"usd","created":1})")).reason,
             Catch::Contains("names no charge"));
  CHECK_THAT(plan(R"({"id":"evt_2","type":"payout.paid","created":1})").reason, Catch::Contains("data.object"));
  CHECK_THAT(plan("{not json").reason, Catch::Contains("malformed JSON"));
  const auto failed = plan(event("charge.succeeded", R"({"id":"ch_1","amount":5,"currency":"zzz","captured":true,"created":1})"));
  CHECK(failed.status == plan_status::fail);
  CHECK(failed.entries.empty());
}

TEST_CASE("unknown and thin events are stored, acknowledged and not posted", "[stripe][posting]") {
  const auto unknown = plan(event("customer.created", R"({"id":"cus_1"})"));
  CHECK(unknown.status == plan_status::ignore);
  CHECK(unknown.event_id == "evt_1");
  const auto thin = plan(R"({"id":"evt_t","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered","created":1})");
  CHECK(thin.status == plan_status::ignore);
  CHECK_THAT(thin.reason, Catch::Contains("thin event"));
  CHECK(plan(event("invoice.paid", R"({"id":"in_1","charge":"ch_1"})")).status == plan_status::ignore);
}

TEST_CASE("fees and currency conversion come from the balance transaction", "[stripe][posting]") {
  const auto gross = plan(event("charge.succeeded", charge)).entries.at(0);
  simdjson::dom::parser parser;
  std::string error;
  SECTION("settled in the charge currency: one fee entry") {
    const auto bt = stripe::parse_balance_transaction(
        parser, R"({"id":"txn_1","object":"balance_transaction","amount":2000,"fee":88,"net":1912,"currency":"usd"})", error);
    REQUIRE(bt);
    const auto fees = stripe::fee_entries(gross, "ch_1", *bt, currencies);
    REQUIRE(fees.status == plan_status::post);
    REQUIRE(fees.entries.size() == 1);
    CHECK(fees.entries[0].idempotency_key == "ch_1:fee");
    CHECK(fees.entries[0].lines == lines{{"stripe.fees", 88, "USD"}, {"stripe.clearing", -88, "USD"}});
  }
  SECTION("settled in another currency: a conversion entry balanced per currency, then the fee") {
    const auto bt = stripe::parse_balance_transaction(
        parser, R"({"id":"txn_1","amount":1580,"fee":76,"net":1504,"currency":"gbp"})", error);
    REQUIRE(bt);
    const auto fees = stripe::fee_entries(gross, "ch_1", *bt, currencies);
    REQUIRE(fees.entries.size() == 2);
    CHECK(fees.entries[0].idempotency_key == "ch_1:fx");
    CHECK(fees.entries[0].lines == lines{{"stripe.clearing", 1580, "GBP"},
                                         {"fx", -1580, "GBP"},
                                         {"fx", 2000, "USD"},
                                         {"stripe.clearing", -2000, "USD"}});
    CHECK(fees.entries[1].lines == lines{{"stripe.fees", 76, "GBP"}, {"stripe.clearing", -76, "GBP"}});
  }
  SECTION("an inconsistent balance transaction is refused") {
    CHECK_FALSE(stripe::parse_balance_transaction(parser, R"({"id":"txn_1","amount":2000,"fee":88,"net":1900,"currency":"usd"})", error));
    CHECK_THAT(error, Catch::Contains("amount - fee != net"));
  }
}

// Found by fuzz/stripe_event_fuzz: both were undefined behaviour (UBSan) on a hostile or broken
// GET /v1/balance_transactions answer.
TEST_CASE("a balance transaction whose amount - fee does not fit in 64 bits is refused", "[stripe][posting]") {
  simdjson::dom::parser parser;
  std::string error;
  CHECK_FALSE(stripe::parse_balance_transaction(
      parser, R"({"id":"txn_1","amount":-9223372036854775808,"fee":1,"net":9223372036854775807,"currency":"usd"})",
      error));
  CHECK_THAT(error, Catch::Contains("does not fit in 64 bits"));
}

TEST_CASE("a charge settled for a non-positive amount fails instead of posting", "[stripe][posting]") {
  const auto gross = plan(event("charge.succeeded", charge)).entries.at(0);
  for (const std::int64_t amount : {INT64_MIN, std::int64_t{-1580}, std::int64_t{0}}) {
    stripe::balance_transaction bt{"txn_1", amount, 0, amount, "gbp", {}};
    const auto fees = stripe::fee_entries(gross, "ch_1", bt, currencies);
    CHECK(fees.status == plan_status::fail);
    CHECK(fees.entries.empty());
    CHECK_THAT(fees.reason, Catch::Contains("non-positive"));
  }
}

// Posting lanes (migration 0046): the events of one money object must share a lane, or two posters
// could post them side by side and out of arrival order.
TEST_CASE("every event about one charge names that charge as its money object, so they share a posting lane",
          "[stripe][posting]") {
  const auto money_object = [](const std::string& json) {
    simdjson::dom::parser parser;
    return std::string(stripe::money_object_of(parser.parse(json).value()));
  };
  const std::string about_ch_a[] = {
      R"({"id":"evt_1","type":"charge.succeeded","data":{"object":{"id":"ch_A","object":"charge","amount":100}}})",
      R"({"id":"evt_2","type":"charge.refunded","data":{"object":{"id":"ch_A","object":"charge","refunded":true}}})",
      R"({"id":"evt_3","type":"refund.created","data":{"object":{"id":"re_1","object":"refund","charge":"ch_A"}}})",
      R"({"id":"evt_4","type":"charge.dispute.created","data":{"object":{"id":"dp_1","object":"dispute","charge":"ch_A"}}})",
      R"({"id":"evt_5","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","latest_charge":"ch_A"}}})",
      R"({"id":"evt_6","type":"application_fee.created","data":{"object":{"id":"fee_1","object":"application_fee","charge":"ch_A"}}})",
      // An expanded charge names it by its id.
      R"({"id":"evt_7","type":"refund.updated","data":{"object":{"id":"re_2","object":"refund","charge":{"id":"ch_A","object":"charge"}}}})",
  };
  for (const std::string& json : about_ch_a) {
    INFO(json);
    CHECK(money_object(json) == "ch_A");
    CHECK(stripe::posting_lane_of(money_object(json)) == stripe::posting_lane_of("ch_A"));
  }
  // A payout is its own money object; an event without data.object (a thin event) names none.
  CHECK(money_object(R"({"id":"evt_8","type":"payout.paid","data":{"object":{"id":"po_1","object":"payout"}}})") == "po_1");
  CHECK(money_object(R"({"id":"evt_9","type":"v1.payment_intent.succeeded","related_object":{"id":"pi_2"}})").empty());
  CHECK(stripe::posting_lane_of("") == 0);
}

TEST_CASE("posting lanes are spread evenly and stable across releases", "[stripe][posting]") {
  // Stable: a rolling upgrade has old and new workers storing one tenant's events side by side,
  // so the lane of an id must never change: it is FNV-1a 32-bit (checked against the published
  // test vectors) modulo posting_lanes.
  const auto fnv1a = [](std::string_view text) {
    std::uint32_t hash = 2166136261u;
    for (const char c : text) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 16777619u;
    }
    return hash;
  };
  CHECK(fnv1a("a") == 0xe40c292cu);  // the FNV-1a 32-bit test vector for "a"
  CHECK(fnv1a("foobar") == 0xbf9cf968u);
  for (const char* id : {"ch_A", "ch_3MmlLrLkdIwHu7ix0snN0B15", "po_1OaFDbEcg9tTZuTgNYmX9ABC", "a"}) {
    CHECK(stripe::posting_lane_of(id) == fnv1a(id) % stripe::posting_lanes);
  }
  std::array<int, stripe::posting_lanes> per_lane{};
  for (int i = 0; i < 4000; ++i) ++per_lane.at(stripe::posting_lane_of("ch_" + std::to_string(1'000'000 + i * 7919)));
  for (const int count : per_lane) {
    CHECK(count > 4000 / stripe::posting_lanes * 8 / 10);
    CHECK(count < 4000 / stripe::posting_lanes * 12 / 10);
  }
}
