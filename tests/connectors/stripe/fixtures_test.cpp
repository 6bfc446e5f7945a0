// Stripe's own published objects (tests/fixtures/stripe, from stripe/openapi's fixtures3.json; the
// README there names the commit) through the posting rules: every object type we post, inside
// Stripe's published event envelope. Where a scenario needs money to move, the test changes the
// named fields of a copy and keeps every other field as published.
#include <catch2/catch.hpp>

#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/thin_event.hpp"
#include "tests/support/fixture.hpp"

using namespace bankworker;
using stripe::plan_status;
using test::read_fixture;
using test::stripe_event;
using test::with_field;

namespace {

const core::currency_table currencies({{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true}});

constexpr std::string_view charge_id = "ch_1PgafuB7WZ01zgkWXYmPNZs8";
constexpr std::string_view charge_txn = "txn_1PgaxNB7WZ01zgkWEV3TLf40";

stripe::posting_plan plan(std::string_view type, const std::string& object) {
  simdjson::dom::parser parser;
  stripe::posting_plan result = stripe::plan_postings(parser, stripe_event(type, object), currencies);
  for (const stripe::fetch_request& request : result.to_fetch) CHECK(stripe::is_relative_api_path(request.path));
  return result;
}

stripe::posting_plan complete(const stripe::posting_plan& waiting, std::string body) {
  REQUIRE(waiting.to_fetch.size() == 1);
  simdjson::dom::parser parser;
  const std::vector<stripe::fetched_object> fetched{{waiting.to_fetch[0], std::move(body)}};
  return stripe::complete_plan(parser, waiting, fetched, currencies);
}

std::string captured_charge() {
  return with_field(with_field(read_fixture("stripe/charge.json"), "captured", "false", "true"), "amount_captured",
                    "0", "100");
}

}  // namespace

TEST_CASE("Stripe's published event envelope about an object we do not post is ignored", "[stripe][fixtures]") {
  simdjson::dom::parser parser;
  const auto result = stripe::plan_postings(parser, read_fixture("stripe/event.json"), currencies);
  CHECK(result.status == plan_status::ignore);
  CHECK(result.event_id == "evt_1Pgc76B7WZ01zgkWwyRHS12y");
  CHECK_THAT(result.reason, Catch::Contains("plan.created"));
}

TEST_CASE("the published charge: uncaptured posts nothing; captured posts its gross and asks for its balance "
          "transaction, which settles it",
          "[stripe][fixtures]") {
  CHECK(plan("charge.succeeded", read_fixture("stripe/charge.json")).status == plan_status::ignore);
  const auto gross = plan("charge.captured", captured_charge());
  REQUIRE(gross.status == plan_status::post);
  REQUIRE(gross.entries.size() == 1);
  CHECK(gross.entries[0].idempotency_key == std::string(charge_id) + ":gross");
  CHECK(gross.entries[0].lines == std::vector<ledger::line>{{"stripe.clearing", 100, "USD"}, {"revenue", -100, "USD"}});
  CHECK(gross.balance_transaction_id == charge_txn);
  REQUIRE(gross.to_fetch.size() == 1);
  CHECK(gross.to_fetch[0].path == "/v1/balance_transactions/" + std::string(charge_txn));

  // The published balance transaction is this charge's: 1.00 USD, no fee, nothing left to book.
  const auto settled = complete(gross, read_fixture("stripe/balance_transaction.json"));
  REQUIRE(settled.status == plan_status::post);
  CHECK_FALSE(settled.awaiting_settlement());
  CHECK(settled.entries.size() == 1);
}

TEST_CASE("the published balance transaction parses, with its null exchange rate", "[stripe][fixtures]") {
  simdjson::dom::parser parser;
  std::string error;
  const auto bt = stripe::parse_balance_transaction(parser, read_fixture("stripe/balance_transaction.json"), error);
  INFO(error);
  REQUIRE(bt);
  CHECK(bt->id == charge_txn);
  CHECK(bt->amount == 100);
  CHECK(bt->fee == 0);
  CHECK(bt->net == 100);
  CHECK(bt->currency == "usd");
  CHECK_FALSE(bt->exchange_rate);
}

TEST_CASE("the published payment intent: no charge yet fails; with latest_charge as an id the charge is fetched",
          "[stripe][fixtures]") {
  const std::string intent = read_fixture("stripe/payment_intent.json");
  CHECK_THAT(plan("payment_intent.succeeded", intent).reason, Catch::Contains("names no charge"));
  const auto paid = plan("payment_intent.succeeded",
                         with_field(with_field(intent, "latest_charge", "null", "\"" + std::string(charge_id) + "\""),
                                    "amount_received", "0", "1099"));
  REQUIRE(paid.status == plan_status::post);
  CHECK(paid.entries.at(0).lines.at(0) == ledger::line{"stripe.clearing", 1099, "USD"});
  REQUIRE(paid.to_fetch.size() == 1);
  CHECK(paid.to_fetch[0] == stripe::fetch_request{"charge", std::string(charge_id), "/v1/charges/" + std::string(charge_id)});
  // The published charge names its balance transaction by id: that is fetched next.
  const auto next = complete(paid, read_fixture("stripe/charge.json"));
  REQUIRE(next.to_fetch.size() == 1);
  CHECK(next.to_fetch[0].id == charge_txn);
}

TEST_CASE("the published refund, with no balance transaction yet, posts its presentment side and asks for itself",
          "[stripe][fixtures]") {
  const auto refund = plan("refund.created", read_fixture("stripe/refund.json"));
  REQUIRE(refund.status == plan_status::post);
  REQUIRE(refund.entries.size() == 1);
  CHECK(refund.entries[0].idempotency_key == "re_1Pgc72B7WZ01zgkWqPvrRrPE:refund");
  CHECK(refund.entries[0].lines == std::vector<ledger::line>{{"refunds", 100, "USD"}, {"stripe.clearing", -100, "USD"}});
  REQUIRE(refund.to_fetch.size() == 1);
  CHECK(refund.to_fetch[0].object == "refund");
  CHECK(refund.to_fetch[0].path == "/v1/refunds/re_1Pgc72B7WZ01zgkWqPvrRrPE");
}

TEST_CASE("the published dispute: nothing moves when created; a withdrawal without balance transactions waits",
          "[stripe][fixtures]") {
  const std::string dispute = read_fixture("stripe/dispute.json");
  CHECK(plan("charge.dispute.created", dispute).status == plan_status::ignore);
  const auto withdrawn = plan("charge.dispute.funds_withdrawn", dispute);
  REQUIRE(withdrawn.status == plan_status::post);
  CHECK(withdrawn.entries.at(0).lines ==
        std::vector<ledger::line>{{"disputes", 1000, "USD"}, {"stripe.clearing", -1000, "USD"}});
  REQUIRE(withdrawn.to_fetch.size() == 1);
  CHECK(withdrawn.to_fetch[0].path == "/v1/disputes/dp_1Pgc71B7WZ01zgkWMevJiAUx");
}

TEST_CASE("the published payout posts; the charge's balance transaction offered for it is refused", "[stripe][fixtures]") {
  const auto payout = plan("payout.paid", read_fixture("stripe/payout.json"));
  REQUIRE(payout.status == plan_status::post);
  CHECK(payout.entries.at(0).lines == std::vector<ledger::line>{{"bank", 1100, "USD"}, {"stripe.clearing", -1100, "USD"}});
  REQUIRE(payout.to_fetch.size() == 1);
  CHECK(payout.to_fetch[0].id == charge_txn);  // the fixtures reuse one id
  const auto refused = complete(payout, read_fixture("stripe/balance_transaction.json"));
  CHECK(refused.status == plan_status::fail);
  CHECK_THAT(refused.reason, Catch::Contains("non-negative"));
}

TEST_CASE("the published application fee and fee refund post and ask for their balance transactions",
          "[stripe][fixtures]") {
  const std::string fee = read_fixture("stripe/application_fee.json");
  const auto created = plan("application_fee.created", fee);
  REQUIRE(created.status == plan_status::post);
  CHECK(created.entries.at(0).lines ==
        std::vector<ledger::line>{{"stripe.clearing", 100, "USD"}, {"application_fees", -100, "USD"}});
  CHECK(created.to_fetch.at(0).id == charge_txn);
  const auto refunded = plan("application_fee.refunded", with_field(fee, "data", "[]", "[" + read_fixture("stripe/fee_refund.json") + "]"));
  REQUIRE(refunded.status == plan_status::post);
  CHECK(refunded.entries.at(0).idempotency_key == "fr_1Pgc70B7WZ01zgkWSr1ANtFu:application_fee_refund");
  CHECK(refunded.to_fetch.at(0).path ==
        "/v1/application_fees/fee_1Pgc6zB7WZ01zgkWOMh2at1m/refunds/fr_1Pgc70B7WZ01zgkWSr1ANtFu");
}

TEST_CASE("the published invoice moves no money itself", "[stripe][fixtures]") {
  const auto invoice = plan("invoice.paid", read_fixture("stripe/invoice.json"));
  CHECK(invoice.status == plan_status::ignore);
  CHECK_THAT(invoice.reason, Catch::Contains("in_1Pgc6tB7WZ01zgkWu9fdqL6I"));
}
