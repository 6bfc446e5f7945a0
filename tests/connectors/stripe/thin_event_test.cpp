// Thin events: what is read from them, which related objects are fetched and from where, and how
// a fetched object posts through the snapshot rules.
#include <catch2/catch.hpp>

#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/thin_event.hpp"

using namespace bankworker;

namespace {

const core::currency_table currencies({{"USD", 2, true}});

std::string thin(std::string_view type, std::string_view related, std::string_view context = "null") {
  return R"({"id":"evt_test_65R9Ijk8","object":"v2.core.event","type":")" + std::string(type) +
         R"(","created":"2026-11-22T06:48:32.246Z","livemode":false,"context":)" + std::string(context) +
         R"(,"related_object":)" + std::string(related) + R"(,"reason":null})";
}

const std::string intent_related = R"({"id":"pi_1","type":"payment_intent","url":"/v1/payment_intents/pi_1"})";

stripe::thin_event parsed(const std::string& json) {
  simdjson::dom::parser parser;
  std::string error;
  auto event = stripe::parse_thin_event(parser, json, error);
  INFO(error);
  REQUIRE(event);
  return *event;
}

}  // namespace

TEST_CASE("a thin event's id, type, time, account and related object are read", "[stripe][thin]") {
  const auto event = parsed(thin("v1.payment_intent.succeeded", intent_related, R"("acct_1Connected")"));
  CHECK(event.id == "evt_test_65R9Ijk8");
  CHECK(event.type == "v1.payment_intent.succeeded");
  CHECK(event.created_s == 1'795'330'112);
  CHECK(event.account == "acct_1Connected");
  REQUIRE(event.related);
  CHECK(event.related->id == "pi_1");
  CHECK(event.related->type == "payment_intent");
  CHECK(event.related->url == "/v1/payment_intents/pi_1");
  simdjson::dom::parser parser;
  CHECK(stripe::is_thin_event(parser, thin("v1.payment_intent.succeeded", intent_related)));
  CHECK_FALSE(stripe::is_thin_event(parser, R"({"id":"evt_1","object":"event"})"));
}

TEST_CASE("a thin event without a readable time or related object id is refused with the reason", "[stripe][thin]") {
  simdjson::dom::parser parser;
  std::string error;
  std::string json = thin("v1.payment_intent.succeeded", intent_related);
  json.replace(json.find("2026-11-22T06:48:32.246Z"), 24, "yesterday");
  CHECK_FALSE(stripe::parse_thin_event(parser, json, error));
  CHECK(error.find("created") != std::string::npos);
  CHECK_FALSE(stripe::parse_thin_event(parser, thin("v1.payment_intent.succeeded", R"({"type":"payment_intent","url":"/v1/x"})"), error));
  CHECK(error.find("related_object.id") != std::string::npos);
  CHECK_FALSE(stripe::parse_thin_event(parser, R"({"id":"evt_1","object":"event","created":1})", error));
}

TEST_CASE("RFC 3339 times are read exactly, with fractions and offsets, and nonsense is refused", "[stripe][thin]") {
  CHECK(stripe::parse_rfc3339_s("1970-01-01T00:00:00Z") == 0);
  CHECK(stripe::parse_rfc3339_s("2024-02-29T23:59:59.999999Z") == 1'709'251'199);
  CHECK(stripe::parse_rfc3339_s("2024-03-01T01:00:00+01:00") == 1'709'251'200);
  CHECK(stripe::parse_rfc3339_s("2024-02-29T18:00:00-06:00") == 1'709'251'200);
  for (const char* bad : {"", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                          "2024-01-01T24:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00", "2024-01-01T00:00:00.Z",
                          "2024-01-01T00:00:00+0100", "1709251200", "2024-01-01T00:00:00Zjunk"}) {
    INFO(bad);
    CHECK_FALSE(stripe::parse_rfc3339_s(bad));
  }
}

TEST_CASE("only plain /v1/ and /v2/ object paths may be fetched, so the key never leaves the Stripe base URL",
          "[stripe][thin]") {
  CHECK(stripe::is_relative_api_path("/v1/payment_intents/pi_1"));
  CHECK(stripe::is_relative_api_path("/v2/core/accounts/acct-1"));
  for (const char* bad : {"https://evil.example/v1/x", "//evil.example/v1/x", "/v1//x", "/v1/../v1/x", "/v1/./x",
                          "/v1/x?expand=all", "/v1/x#y", "/v1/x%2F..", "/v3/x", "/v1/", "/v1", "v1/x", "/v1/x/",
                          "/v1/x y", "/v1/x\\y", "/v1/x@evil"}) {
    INFO(bad);
    CHECK_FALSE(stripe::is_relative_api_path(bad));
  }
  CHECK_FALSE(stripe::is_relative_api_path("/v1/" + std::string(stripe::related_url_bytes_max, 'a')));
}

TEST_CASE("a thin event maps to the snapshot type of a money object we post, only when the related type matches",
          "[stripe][thin]") {
  CHECK(stripe::snapshot_type_of(parsed(thin("v1.payment_intent.succeeded", intent_related))) ==
        "payment_intent.succeeded");
  CHECK(stripe::snapshot_type_of(parsed(thin("v1.charge.dispute.created",
                                             R"({"id":"dp_1","type":"dispute","url":"/v1/disputes/dp_1"})"))) ==
        "charge.dispute.created");
  // A money type about another object, a billing meter, a v2 event, no related object: not posted.
  CHECK_FALSE(stripe::snapshot_type_of(parsed(thin("v1.payment_intent.succeeded",
                                                   R"({"id":"ch_1","type":"charge","url":"/v1/charges/ch_1"})"))));
  CHECK_FALSE(stripe::snapshot_type_of(parsed(thin("v1.billing.meter.error_report_triggered",
                                                   R"({"id":"mtr_1","type":"billing.meter","url":"/v1/billing/meters/mtr_1"})"))));
  CHECK_FALSE(stripe::snapshot_type_of(parsed(thin("v2.core.account.created",
                                                   R"({"id":"acct_1","type":"v2.core.account","url":"/v2/core/accounts/acct_1"})"))));
  CHECK_FALSE(stripe::snapshot_type_of(parsed(thin("v1.payment_intent.succeeded", "null"))));
}

TEST_CASE("a fetched payment intent posts the same gross entry as its snapshot event would", "[stripe][thin]") {
  const auto event = parsed(thin("v1.payment_intent.succeeded", intent_related, R"("acct_1Connected")"));
  const std::string intent = R"({"id":"pi_1","object":"payment_intent","amount":2000,"amount_received":2000,)"
                             R"("currency":"usd","created":1795330100,"latest_charge":"ch_1"})";
  const std::string snapshot = stripe::snapshot_event_json(event, "payment_intent.succeeded", intent);
  simdjson::dom::parser parser;
  const stripe::posting_plan plan = stripe::plan_postings(parser, snapshot, currencies);
  REQUIRE(plan.status == stripe::plan_status::post);
  CHECK(plan.event_id == "evt_test_65R9Ijk8");
  CHECK(plan.account == "acct_1Connected");
  REQUIRE(plan.entries.size() == 1);
  CHECK(plan.entries[0].idempotency_key == "ch_1:gross");
  // The stored thin event itself plans nothing: its object is fetched first.
  CHECK(stripe::plan_postings(parser, thin("v1.payment_intent.succeeded", intent_related), currencies).status ==
        stripe::plan_status::ignore);
}
