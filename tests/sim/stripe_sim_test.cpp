// The Stripe simulator end to end: the real stripe_sim binary delivering signed events to a
// receiver in this test, checked with bankworker's verifier and posting rules, and its API
// answering the calls the worker makes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <simdjson.h>

#include "connectors/stripe/posting.hpp"
#include "connectors/stripe/signature.hpp"
#include "tests/support/child.hpp"
#include "tests/support/fixture.hpp"
#include "tests/support/http_client.hpp"
#include "worker/http_server.hpp"

using namespace bankworker;
namespace asio = boost::asio;

namespace {

constexpr const char* endpoint_secret = "whsec_stripe_sim_test_secret";
const core::currency_table currencies({{"USD", 2, true}, {"GBP", 2, true}, {"JPY", 0, true}});

struct received {
  std::string body;
  std::string signature;
};

// A webhook endpoint in this process that records what it receives and answers 200.
struct receiver {
  asio::io_context io;
  std::mutex mutex;
  std::vector<received> deliveries;
  std::unique_ptr<worker::http_server> server;
  std::thread thread;

  receiver() {
    worker::http_settings settings;
    settings.listen = {"127.0.0.1", 0};
    std::vector<worker::http_route> routes;
    routes.push_back({"POST", "/hook", false, [this](worker::http_request request) -> asio::awaitable<worker::http_response> {
                        std::lock_guard lock(mutex);
                        deliveries.push_back({request.body, std::string(request.header("stripe-signature"))});
                        co_return worker::http_response{200, "text/plain", "ok", {}};
                      }});
    server = std::make_unique<worker::http_server>(io, settings, std::move(routes));
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~receiver() {
    server->stop();
    io.stop();
    thread.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server->port()) + "/hook"; }
};

struct running_sim {
  test::child_process process{STRIPE_SIM_BINARY, {"--port", "0", "--seed", "7"}, {}};
  std::string url = test::base_url_from(process);

  simdjson::dom::element trigger(simdjson::dom::parser& parser, const std::string& body) {
    const auto result = test::http_post(url + "/sim/trigger", body);
    REQUIRE(result.status == 200);
    simdjson::dom::element doc;
    REQUIRE(parser.parse(result.body).get(doc) == simdjson::SUCCESS);
    return doc;
  }
};

stripe::signature_check verify(const received& r) {
  const crypto::secret secrets[] = {crypto::secret::copy_of(endpoint_secret)};
  return stripe::verify_signature(r.signature, r.body, secrets, std::chrono::system_clock::now());
}

}  // namespace

TEST_CASE("a simulated payment arrives as two verifiable events that plan one gross entry", "[stripe_sim]") {
  running_sim sim;
  receiver hook;
  simdjson::dom::parser parser;
  const auto answer = sim.trigger(parser, R"({"kind":"payment","amount":2000,"currency":"usd","mode":"valid","secret":")" +
                                              std::string(endpoint_secret) + R"(","deliver_to":")" + hook.url() + "\"}");
  CHECK(simdjson::dom::array(answer["statuses"]).size() == 2);
  REQUIRE(hook.deliveries.size() == 2);
  simdjson::dom::parser event_parser;
  std::vector<ledger::entry> grosses;
  std::optional<std::string> balance_transaction;
  for (const received& r : hook.deliveries) {
    CHECK(verify(r).status == stripe::signature_status::verified);
    const auto plan = stripe::plan_postings(event_parser, r.body, currencies);
    REQUIRE(plan.status == stripe::plan_status::post);
    grosses.push_back(plan.entries.at(0));
    if (plan.balance_transaction_id) balance_transaction = plan.balance_transaction_id;
  }
  CHECK(grosses[0].idempotency_key == grosses[1].idempotency_key);
  CHECK(grosses[0].lines == grosses[1].lines);

  REQUIRE(balance_transaction);
  const auto bt_response = test::http_get(sim.url + "/v1/balance_transactions/" + *balance_transaction,
                                          {"Authorization: Bearer sk_test_bankworker_sim"});
  REQUIRE(bt_response.status == 200);
  std::string error;
  const auto bt = stripe::parse_balance_transaction(event_parser, bt_response.body, error);
  REQUIRE(bt);
  CHECK(bt->fee == 2000 * 29 / 1000 + 30);
  const std::string charge_id = grosses[0].idempotency_key.substr(0, grosses[0].idempotency_key.find(':'));
  const auto fees = stripe::fee_entries(grosses[0], charge_id, *bt, currencies);
  CHECK(fees.status == stripe::plan_status::post);
}

TEST_CASE("the simulator's API refuses a wrong key and unknown objects the way Stripe does", "[stripe_sim]") {
  running_sim sim;
  CHECK(test::http_get(sim.url + "/v1/balance_transactions/txn_missing", {"Authorization: Bearer sk_test_bankworker_sim"})
            .status == 404);
  const auto unauthorised = test::http_get(sim.url + "/v1/events", {"Authorization: Bearer sk_test_wrong"});
  CHECK(unauthorised.status == 401);
  CHECK(unauthorised.body.find("\"type\":\"invalid_request_error\"") != std::string::npos);
}

TEST_CASE("duplicate, reordered, stale and forged deliveries come out as labelled", "[stripe_sim]") {
  running_sim sim;
  simdjson::dom::parser parser;
  const auto send = [&](std::string_view mode) {
    receiver hook;
    sim.trigger(parser, R"({"kind":"payout","amount":5000,"currency":"usd","mode":")" + std::string(mode) +
                            R"(","secret":")" + endpoint_secret + R"(","deliver_to":")" + hook.url() + "\"}");
    return std::vector<received>(hook.deliveries);
  };
  const auto duplicated = send("duplicate");
  REQUIRE(duplicated.size() == 2);
  CHECK(duplicated[0].body == duplicated[1].body);
  CHECK(verify(duplicated[1]).status == stripe::signature_status::verified);

  const auto stale = send("stale");
  REQUIRE(stale.size() == 1);
  CHECK(verify(stale[0]).status == stripe::signature_status::timestamp_outside_tolerance);

  const auto forged = send("forged");
  REQUIRE(forged.size() == 1);
  CHECK(verify(forged[0]).status == stripe::signature_status::no_matching_signature);

  receiver hook;
  sim.trigger(parser, R"({"kind":"payout_failed","amount":5000,"currency":"usd","mode":"reorder","secret":")" +
                          std::string(endpoint_secret) + R"(","deliver_to":")" + hook.url() + "\"}");
  REQUIRE(hook.deliveries.size() == 2);
  CHECK(hook.deliveries[0].body.find("\"payout.failed\"") != std::string::npos);
  CHECK(hook.deliveries[1].body.find("\"payout.paid\"") != std::string::npos);
}

TEST_CASE("the events list returns what came after a given event, newest first", "[stripe_sim]") {
  running_sim sim;
  simdjson::dom::parser parser;
  for (int i = 0; i < 3; ++i) sim.trigger(parser, R"({"kind":"payout","amount":100,"currency":"usd"})");
  const auto ids_response = test::http_get(sim.url + "/sim/events");
  simdjson::dom::element ids_doc;
  REQUIRE(parser.parse(ids_response.body).get(ids_doc) == simdjson::SUCCESS);
  std::vector<std::string> ids;
  for (simdjson::dom::element id : simdjson::dom::array(ids_doc["ids"])) ids.emplace_back(std::string_view(id));
  REQUIRE(ids.size() == 3);

  const auto page = test::http_get(sim.url + "/v1/events?ending_before=" + ids[0] + "&limit=10",
                                   {"Authorization: Bearer sk_test_bankworker_sim"});
  REQUIRE(page.status == 200);
  simdjson::dom::element list;
  REQUIRE(parser.parse(page.body).get(list) == simdjson::SUCCESS);
  simdjson::dom::array data = list["data"];
  REQUIRE(data.size() == 2);
  CHECK(std::string_view(data.at(0)["id"]) == ids[2]);
  CHECK(std::string_view(data.at(1)["id"]) == ids[1]);
  CHECK_FALSE(bool(list["has_more"]));
}

namespace {

// The keys of a JSON object, sorted.
std::vector<std::string> keys_of(simdjson::dom::element object) {
  std::vector<std::string> keys;
  for (const auto field : simdjson::dom::object(object)) keys.emplace_back(field.key);
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace

TEST_CASE("every leg's balance transaction is served as Stripe's published one is shaped, in the settlement currency",
          "[stripe_sim]") {
  running_sim sim;
  simdjson::dom::parser parser;
  simdjson::dom::parser fixture_parser;
  const simdjson::dom::element fixture = fixture_parser.parse(test::read_fixture("stripe/balance_transaction.json"));
  const std::vector<std::string> published = keys_of(fixture);
  const auto events_of = [&](const std::string& trigger) {
    const auto answer = sim.trigger(parser, "{" + trigger + R"(,"mode":"valid","secret":"whsec_x","deliver_to":""})");
    std::vector<std::string> ids;
    for (const auto id : simdjson::dom::array(answer["events"])) ids.emplace_back(std::string_view(id));
    return ids;
  };
  events_of(R"("kind":"payment","amount":5000,"currency":"jpy","settlement_currency":"usd")");
  events_of(R"("kind":"refund","amount":2000,"currency":"jpy")");
  events_of(R"("kind":"dispute","amount":3000,"currency":"jpy")");
  events_of(R"("kind":"payout_failed","amount":700,"currency":"usd")");
  events_of(R"("kind":"application_fee","amount":120,"currency":"usd")");

  // Each event's money object names its balance transaction (refund, payouts, application fee) or
  // lists it (dispute); each one GETs with Stripe's fields and the sign and currency of its leg.
  const auto listed = test::http_get(sim.url + "/v1/events?limit=100", {"Authorization: Bearer sk_test_bankworker_sim"});
  REQUIRE(listed.status == 200);
  simdjson::dom::parser list_parser;
  const simdjson::dom::element list = list_parser.parse(listed.body);
  std::map<std::string, std::pair<std::int64_t, std::string>> seen;  // type → amount, currency
  for (const auto event : simdjson::dom::array(list["data"])) {
    const simdjson::dom::element object = event["data"]["object"];
    std::vector<std::string> ids;
    for (const char* field : {"balance_transaction", "failure_balance_transaction"}) {
      std::string_view id;
      if (object[field].get(id) == simdjson::SUCCESS) ids.emplace_back(id);
    }
    simdjson::dom::array embedded;
    if (object["balance_transactions"].get(embedded) == simdjson::SUCCESS) {
      for (const auto bt : embedded) {
        CHECK(keys_of(bt) == published);
        ids.emplace_back(std::string_view(bt["id"]));
      }
    }
    for (const std::string& id : ids) {
      const auto got = test::http_get(sim.url + "/v1/balance_transactions/" + id, {"Authorization: Bearer sk_test_bankworker_sim"});
      REQUIRE(got.status == 200);
      simdjson::dom::parser bt_parser;
      const simdjson::dom::element bt = bt_parser.parse(got.body);
      CHECK(keys_of(bt) == published);
      std::string error;
      const auto parsed = stripe::parse_balance_transaction(bt_parser, got.body, error);
      INFO(error);
      REQUIRE(parsed);
      seen[std::string(std::string_view(bt["type"]))] = {parsed->amount, parsed->currency};
    }
  }
  // The JPY charge settled in USD at 0.8: its refund and dispute leave the balance in USD.
  CHECK(seen["charge"] == std::pair<std::int64_t, std::string>{4000, "usd"});
  CHECK(seen["refund"] == std::pair<std::int64_t, std::string>{-1600, "usd"});
  CHECK(seen["adjustment"] == std::pair<std::int64_t, std::string>{-2400, "usd"});
  CHECK(seen["payout"] == std::pair<std::int64_t, std::string>{-700, "usd"});
  CHECK(seen["payout_failure"] == std::pair<std::int64_t, std::string>{700, "usd"});
  CHECK(seen["application_fee"] == std::pair<std::int64_t, std::string>{120, "usd"});
}
