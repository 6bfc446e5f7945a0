// The Stripe API client's pure parts: Stripe's errors classified into what the queue must do, and
// /v1/events pages read strictly. The calls themselves run against the simulator in
// tests/connectors/stripe/api_jobs_pgtest.cpp.
#include <catch2/catch.hpp>

#include "connectors/stripe/api_client.hpp"

using namespace bankworker;
using stripe::api_error_class;

TEST_CASE("Stripe's HTTP errors are classified the way the queue needs them", "[stripe][api]") {
  const std::string_view stripe_error = R"({"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such balance transaction"}})";
  CHECK(stripe::classify_api_error(429, R"({"error":{"type":"rate_limit_error"}})", "2").kind == api_error_class::rate_limited);
  CHECK(stripe::classify_api_error(429, "", "2").retry_after == std::chrono::seconds(2));
  CHECK(stripe::classify_api_error(429, "", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after == std::chrono::seconds(0));
  CHECK(stripe::classify_api_error(500, "<html>", "").kind == api_error_class::transient);
  CHECK(stripe::classify_api_error(503, "", "").kind == api_error_class::transient);
  CHECK(stripe::classify_api_error(401, "", "").kind == api_error_class::credentials);
  CHECK(stripe::classify_api_error(403, "", "").kind == api_error_class::credentials);
  const stripe::api_error missing = stripe::classify_api_error(404, stripe_error, "");
  CHECK(missing.kind == api_error_class::not_found);
  CHECK(missing.code == "resource_missing");
  CHECK(missing.type == "invalid_request_error");
  CHECK(missing.message == "No such balance transaction");
  CHECK(stripe::classify_api_error(400, stripe_error, "").kind == api_error_class::permanent);
  CHECK(stripe::classify_api_error(402, "", "").kind == api_error_class::permanent);
}

TEST_CASE("an error message quoting a key is redacted before it is kept", "[stripe][api]") {
  const auto error = stripe::classify_api_error(
      401, R"({"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_live_51Habcdefghijklmnopqrstuvwxyz0123456789"}})", "");
  CHECK(error.message.find("abcdefghijklmnop") == std::string::npos);
}

TEST_CASE("an events page is read strictly: ids, types, created, has_more, each event's JSON", "[stripe][api]") {
  simdjson::dom::parser parser;
  std::string error;
  const auto page = stripe::parse_events_page(parser, R"({"object":"list","data":[
      {"id":"evt_2","object":"event","type":"payout.paid","created":20,"livemode":false,"account":"acct_1","data":{"object":{"id":"po_1"}}},
      {"id":"evt_1","object":"event","type":"charge.succeeded","created":10,"livemode":true,"data":{"object":{"id":"ch_1"}}}],
      "has_more":true})", error);
  INFO(error);
  REQUIRE(page);
  CHECK(page->has_more);
  REQUIRE(page->events.size() == 2);
  CHECK(page->events[0].id == "evt_2");
  CHECK(page->events[0].account == std::optional<std::string>("acct_1"));
  CHECK(page->events[1].livemode);
  CHECK(page->events[1].created_s == 10);
  CHECK(page->events[1].body.find("\"ch_1\"") != std::string::npos);

  CHECK_FALSE(stripe::parse_events_page(parser, R"({"data":[]})", error));
  CHECK(error == "list.has_more is missing");
  CHECK_FALSE(stripe::parse_events_page(parser, R"({"data":[{"id":"evt/../x","type":"a","created":1}],"has_more":false})", error));
  CHECK_FALSE(stripe::parse_events_page(parser, R"({"data":[{"id":"evt_1","created":1}],"has_more":false})", error));
  CHECK_FALSE(stripe::parse_events_page(parser, "not json", error));
}
