// The Plaid client end to end: the real plaid_sim binary on a free port, the real HTTP client
// (libcurl multi under Asio), every call classified. The simulator's control API is driven with
// plain blocking libcurl calls from the test thread, between runs of the io_context.

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <simdjson.h>

#include "connectors/http/client.hpp"
#include "connectors/plaid/client.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "worker/http_server.hpp"

namespace {

namespace asio = boost::asio;
namespace plaid = bankworker::plaid;
namespace http = bankworker::connectors::http;
namespace test = bankworker::test;
using bankworker::crypto::secret;
using namespace std::chrono_literals;

constexpr std::string_view client_id = "bankworker-sim-client";
constexpr std::string_view api_secret = "bankworker-sim-secret";

const bankworker::core::currency_table currencies({{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true},
                                                   {"BHD", 3, true}, {"BTC", 8, false}});

std::string credentials() {
  return R"("client_id":")" + std::string(client_id) + R"(","secret":")" + std::string(api_secret) + R"(")";
}

// Runs one call on the io_context (this thread) and returns its result.
template <class T>
T run(asio::io_context& io, asio::awaitable<T> task) {
  std::optional<T> out;
  std::exception_ptr failure;
  asio::co_spawn(io, std::move(task), [&](std::exception_ptr error, T value) {
    failure = error;
    if (!error) out.emplace(std::move(value));
    io.stop();
  });
  io.restart();
  io.run();
  if (failure) std::rethrow_exception(failure);
  return std::move(*out);
}

plaid::client_settings settings_for(std::string base_url, std::chrono::milliseconds timeout = 10'000ms) {
  plaid::client_settings settings;
  settings.base_url = std::move(base_url);
  settings.request_timeout = timeout;
  settings.sync_count = 50;
  return settings;
}

// A simulator, an io_context, the HTTP client and the Plaid client, destroyed in reverse.
struct sim_fixture {
  sim_fixture()
      : sim(PLAID_SIM_BINARY, {"--port", "0"}, {}),
        url(test::base_url_from(sim)),
        http(io, http::client_settings{}),
        client(http, currencies, settings_for(url), secret::copy_of(client_id), secret::copy_of(api_secret)) {}

  test::child_process sim;
  std::string url;
  asio::io_context io;
  http::client http;
  plaid::client client;

  std::string public_token() {
    const test::http_result created =
        test::http_post(url + "/sandbox/public_token/create",
                        "{" + credentials() + R"(,"institution_id":"ins_109508","initial_products":["transactions"]})");
    REQUIRE(created.status == 200);
    simdjson::ondemand::parser parser;
    const simdjson::padded_string padded(created.body);
    auto document = parser.iterate(padded);
    return std::string{std::string_view(document["public_token"])};
  }

  // A linked item's access token, through the client under test.
  secret link() {
    auto exchanged = run(io, client.exchange_public_token(public_token()));
    INFO(exchanged.failure.message);
    REQUIRE(exchanged.ok());
    return std::move(exchanged.value->access_token);
  }

  void arm_fault(const std::string& body) {
    const test::http_result armed = test::http_post(url + "/sim/faults", body);
    INFO(armed.body);
    REQUIRE(armed.status == 200);
  }

  // The transactions a correct sync must hold, by id, with their amounts in our sign.
  std::map<std::string, std::int64_t> truth(const secret& access_token) {
    const std::string token(access_token.reveal().text());
    const test::http_result r = test::http_post(url + "/sim/transactions/truth", R"({"access_token":")" + token + R"("})");
    REQUIRE(r.status == 200);
    const std::string prefix = R"({"transactions":)";
    REQUIRE(r.body.starts_with(prefix));
    const std::string as_page = R"({"added":)" + r.body.substr(prefix.size(), r.body.size() - prefix.size() - 1) +
                                R"(,"modified":[],"removed":[],"next_cursor":"","has_more":false})";
    simdjson::ondemand::parser parser;
    const plaid::page_result page = plaid::parse_sync_page(parser, as_page, currencies);
    REQUIRE(page.ok);
    std::map<std::string, std::int64_t> out;
    for (const auto& t : page.page.added) out.emplace(t.transaction_id, t.amount_minor);
    return out;
  }
};

std::string text_of(const secret& value) { return std::string(value.reveal().text()); }

}  // namespace

TEST_CASE("a public token is exchanged, accounts are read, and a full sync walk equals the simulator's truth",
          "[plaid_client]") {
  sim_fixture f;
  auto exchanged = run(f.io, f.client.exchange_public_token(f.public_token()));
  INFO(exchanged.failure.message);
  REQUIRE(exchanged.ok());
  const secret& token = exchanged.value->access_token;
  CHECK(text_of(token).starts_with("access-sandbox-"));
  CHECK(text_of(token).size() == std::string("access-sandbox-").size() + 36);
  CHECK_FALSE(exchanged.value->item_id.empty());
  CHECK(exchanged.call.endpoint == "/item/public_token/exchange");
  CHECK(exchanged.call.http_status == 200);
  CHECK(exchanged.call.bytes_sent > 0);
  CHECK(exchanged.call.bytes_received > 0);
  CHECK(exchanged.call.latency.count() > 0);

  auto accounts = run(f.io, f.client.get_accounts(token));
  INFO(accounts.failure.message);
  REQUIRE(accounts.ok());
  CHECK(accounts.value->accounts.size() == 6);
  CHECK(accounts.value->item_id == exchanged.value->item_id);
  CHECK(accounts.call.endpoint == "/accounts/get");

  simdjson::ondemand::parser parser;
  std::map<std::string, std::int64_t> replayed;
  std::string cursor;
  int pages = 0;
  for (; pages < 1'000; ++pages) {
    auto page = run(f.io, f.client.sync_transactions(token, cursor, parser));
    INFO(page.failure.message);
    REQUIRE(page.ok());
    CHECK(page.call.endpoint == "/transactions/sync");
    for (const auto& t : page.value->added) replayed[t.transaction_id] = t.amount_minor;
    for (const auto& t : page.value->modified) replayed[t.transaction_id] = t.amount_minor;
    for (const auto& r : page.value->removed) replayed.erase(r.transaction_id);
    cursor = page.value->next_cursor;
    if (!page.value->has_more) break;
  }
  CHECK(pages >= 2);  // 120 transactions at count 50
  CHECK(replayed == f.truth(token));
}

TEST_CASE("a public token used twice is invalid_public_token", "[plaid_client]") {
  sim_fixture f;
  const std::string public_token = f.public_token();
  REQUIRE(run(f.io, f.client.exchange_public_token(public_token)).ok());
  const auto again = run(f.io, f.client.exchange_public_token(public_token));
  REQUIRE_FALSE(again.ok());
  CHECK(again.failure.kind == plaid::error_class::invalid_public_token);
  CHECK(again.failure.error_code == "INVALID_PUBLIC_TOKEN");
  CHECK(again.call.http_status == 400);
  CHECK(again.failure.message.find(public_token) == std::string::npos);
}

TEST_CASE("a removed item answers ITEM_NOT_FOUND, classified item_gone", "[plaid_client]") {
  sim_fixture f;
  const secret token = f.link();
  const auto removed = run(f.io, f.client.remove_item(token));
  INFO(removed.failure.message);
  REQUIRE(removed.ok());
  CHECK(removed.value->removed);
  CHECK(removed.call.endpoint == "/item/remove");
  const auto after = run(f.io, f.client.get_accounts(token));
  REQUIRE_FALSE(after.ok());
  CHECK(after.failure.kind == plaid::error_class::item_gone);
  CHECK(after.failure.error_code == "ITEM_NOT_FOUND");
  CHECK(after.call.error_code == "ITEM_NOT_FOUND");
  CHECK(after.failure.message.find(text_of(token)) == std::string::npos);
}

TEST_CASE("the webhook verification key of a signed webhook is fetched, and an unknown key id is invalid_request",
          "[plaid_client]") {
  sim_fixture f;
  const secret token = f.link();
  const test::http_result sent = test::http_post(
      f.url + "/sim/webhooks/send", R"({"access_token":")" + text_of(token) + R"(","url":")" + f.url + R"(/sim/webhooks/inbox"})");
  REQUIRE(sent.status == 200);
  // The JWT header names the key: {"alg":"ES256","kid":"…","typ":"JWT"}, base64url.
  simdjson::ondemand::parser parser;
  const simdjson::padded_string padded(sent.body);
  auto document = parser.iterate(padded);
  const std::string jwt{std::string_view(document["plaid_verification"])};
  const std::string header_b64 = jwt.substr(0, jwt.find('.'));
  std::string header;
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : header_b64) {
    const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    acc = (acc << 6) | static_cast<std::uint32_t>(alphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      header.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  const std::size_t kid_at = header.find(R"("kid":")");
  REQUIRE(kid_at != std::string::npos);
  const std::string kid = header.substr(kid_at + 7, header.find('"', kid_at + 7) - kid_at - 7);

  const auto key = run(f.io, f.client.get_webhook_verification_key(kid));
  INFO(key.failure.message);
  REQUIRE(key.ok());
  CHECK(key.value->kid == kid);
  CHECK_FALSE(key.value->x.empty());
  CHECK_FALSE(key.value->y.empty());
  CHECK(key.value->created_at > 0);
  CHECK_FALSE(key.value->expired_at.has_value());

  const auto unknown = run(f.io, f.client.get_webhook_verification_key("no-such-key"));
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.failure.kind == plaid::error_class::invalid_request);
  CHECK(unknown.failure.error_code == "INVALID_FIELD");
}

TEST_CASE("wrong API keys are invalid_api_keys and the secret is in no message", "[plaid_client]") {
  sim_fixture f;
  const secret token = f.link();
  const std::string wrong = "wrong-secret-0123456789";
  plaid::client wrong_keys(f.http, currencies, settings_for(f.url), secret::copy_of(client_id), secret::copy_of(wrong));
  const auto accounts = run(f.io, wrong_keys.get_accounts(token));
  REQUIRE_FALSE(accounts.ok());
  CHECK(accounts.failure.kind == plaid::error_class::invalid_api_keys);
  CHECK(accounts.failure.error_code == "INVALID_API_KEYS");
  CHECK(accounts.failure.message.find(wrong) == std::string::npos);
}

TEST_CASE("a cursor from another item is cursor_not_associated", "[plaid_client]") {
  sim_fixture f;
  const secret first = f.link();
  const secret second = f.link();
  simdjson::ondemand::parser parser;
  const auto page = run(f.io, f.client.sync_transactions(first, "", parser));
  REQUIRE(page.ok());
  REQUIRE_FALSE(page.value->next_cursor.empty());
  const auto crossed = run(f.io, f.client.sync_transactions(second, page.value->next_cursor, parser));
  REQUIRE_FALSE(crossed.ok());
  CHECK(crossed.failure.kind == plaid::error_class::cursor_not_associated);
  CHECK(crossed.failure.error_code == "INVALID_FIELD");
}

TEST_CASE("every fault the simulator can inject is classified", "[plaid_client]") {
  sim_fixture f;
  const secret token = f.link();
  const std::string token_text = text_of(token);
  simdjson::ondemand::parser parser;
  SECTION("every Plaid error code on /transactions/sync") {
  const std::vector<std::pair<std::string, plaid::error_class>> codes = {
      {"RATE_LIMIT_EXCEEDED", plaid::error_class::rate_limited},
      {"INTERNAL_SERVER_ERROR", plaid::error_class::transient},
      {"PLANNED_MAINTENANCE", plaid::error_class::transient},
      {"INSTITUTION_DOWN", plaid::error_class::institution_down},
      {"INSTITUTION_NOT_RESPONDING", plaid::error_class::institution_down},
      {"ITEM_LOGIN_REQUIRED", plaid::error_class::needs_reauth},
      {"ITEM_LOCKED", plaid::error_class::needs_reauth},
      {"USER_PERMISSION_REVOKED", plaid::error_class::item_gone},
      {"ITEM_NOT_FOUND", plaid::error_class::item_gone},
      {"INVALID_ACCESS_TOKEN", plaid::error_class::invalid_access_token},
      {"INVALID_API_KEYS", plaid::error_class::invalid_api_keys},
      {"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", plaid::error_class::mutation_during_pagination},
  };
  for (const auto& [code, expected] : codes) {
    INFO(code);
    f.arm_fault(R"({"endpoint":"/transactions/sync","error_code":")" + code + R"("})");
    const auto page = run(f.io, f.client.sync_transactions(token, "", parser));
    REQUIRE_FALSE(page.ok());
    CHECK(plaid::to_string(page.failure.kind) == plaid::to_string(expected));
    CHECK(page.call.http_status >= 400);
    CHECK(page.failure.http_status == page.call.http_status);
    CHECK_FALSE(page.call.error_code.empty());
    CHECK(page.failure.message.find(token_text) == std::string::npos);
    // The fault was used up: the next call succeeds.
    CHECK(run(f.io, f.client.sync_transactions(token, "", parser)).ok());
  }
  }

  SECTION("the same faults on other endpoints") {
    f.arm_fault(R"({"error_code":"INSTITUTION_DOWN"})");
    const auto accounts = run(f.io, f.client.get_accounts(token));
    REQUIRE_FALSE(accounts.ok());
    CHECK(accounts.failure.kind == plaid::error_class::institution_down);
    f.arm_fault(R"({"endpoint":"/item/public_token/exchange","error_code":"INTERNAL_SERVER_ERROR"})");
    const auto exchanged = run(f.io, f.client.exchange_public_token(f.public_token()));
    REQUIRE_FALSE(exchanged.ok());
    CHECK(exchanged.failure.kind == plaid::error_class::transient);
    CHECK(exchanged.call.http_status == 500);
  }

  SECTION("a malformed 200 body is response_invalid") {
    f.arm_fault(R"({"endpoint":"/transactions/sync","body":"malformed"})");
    const auto page = run(f.io, f.client.sync_transactions(token, "", parser));
    REQUIRE_FALSE(page.ok());
    CHECK(page.failure.kind == plaid::error_class::response_invalid);
    CHECK(page.call.http_status == 200);
    CHECK_FALSE(page.failure.message.empty());
  }

  SECTION("a truncated body is transient") {
    f.arm_fault(R"({"endpoint":"/transactions/sync","body":"truncated"})");
    const auto page = run(f.io, f.client.sync_transactions(token, "", parser));
    REQUIRE_FALSE(page.ok());
    CHECK(page.failure.kind == plaid::error_class::transient);
  }

  SECTION("an answer later than the deadline is transient") {
    plaid::client impatient(f.http, currencies, settings_for(f.url, 300ms), secret::copy_of(client_id),
                            secret::copy_of(api_secret));
    f.arm_fault(R"({"endpoint":"/transactions/sync","delay_ms":2000})");
    const auto started = std::chrono::steady_clock::now();
    const auto page = run(f.io, impatient.sync_transactions(token, "", parser));
    REQUIRE_FALSE(page.ok());
    CHECK(page.failure.kind == plaid::error_class::transient);
    CHECK(page.call.http_status == 0);
    CHECK(std::chrono::steady_clock::now() - started < 1'500ms);
  }

  SECTION("a refused base URL is refused without a call") {
    plaid::client misconfigured(f.http, currencies, settings_for("http://10.1.2.3:9"), secret::copy_of(client_id),
                                secret::copy_of(api_secret));
    const auto page = run(f.io, misconfigured.sync_transactions(token, "", parser));
    REQUIRE_FALSE(page.ok());
    CHECK(page.failure.kind == plaid::error_class::refused);
  }
}

TEST_CASE("a 429 honours Retry-After, and a server quoting our secret back has it masked and counted",
          "[plaid_client]") {
  namespace worker = bankworker::worker;
  asio::io_context io;
  std::vector<worker::http_route> routes;
  routes.push_back({"POST", "/transactions/sync", false, [](worker::http_request) -> asio::awaitable<worker::http_response> {
                      co_return worker::http_response{
                          429, "application/json",
                          R"({"error_type":"RATE_LIMIT_EXCEEDED","error_code":"TRANSACTIONS_SYNC_LIMIT",)"
                          R"("error_message":"rate limit exceeded","request_id":"r1"})",
                          {{"Retry-After", "7"}}};
                    }});
  routes.push_back({"POST", "/accounts/get", false, [](worker::http_request) -> asio::awaitable<worker::http_response> {
                      co_return worker::http_response{
                          400, "application/json",
                          R"({"error_type":"INVALID_INPUT","error_code":"INVALID_API_KEYS",)"
                          R"("error_message":"secret bankworker-sim-secret is not valid for client","request_id":"r2"})",
                          {}};
                    }});
  worker::http_settings server_settings;
  server_settings.listen = {"127.0.0.1", 0};
  worker::http_server server(io, server_settings, std::move(routes));
  server.start();
  http::client transport(io, http::client_settings{});
  plaid::client client(transport, currencies, settings_for("http://127.0.0.1:" + std::to_string(server.port())),
                       secret::copy_of(client_id), secret::copy_of(api_secret));
  const secret token = secret::copy_of("access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970");
  simdjson::ondemand::parser parser;

  const auto limited = run(io, client.sync_transactions(token, "", parser));
  REQUIRE_FALSE(limited.ok());
  CHECK(limited.failure.kind == plaid::error_class::rate_limited);
  CHECK(limited.failure.retry_after == 7s);
  CHECK(limited.call.http_status == 429);
  CHECK(limited.call.error_code == "TRANSACTIONS_SYNC_LIMIT");
  CHECK(limited.call.redactions == 0);

  const auto echoed = run(io, client.get_accounts(token));
  REQUIRE_FALSE(echoed.ok());
  CHECK(echoed.failure.kind == plaid::error_class::invalid_api_keys);
  CHECK(echoed.failure.message.find(api_secret) == std::string::npos);
  CHECK(echoed.call.redactions == 1);
  server.stop();
}
