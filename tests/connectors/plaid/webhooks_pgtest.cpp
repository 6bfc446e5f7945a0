// POST /webhooks/plaid end to end: the real plaid_sim signs and delivers webhooks (valid and every
// attack it knows) to the route on an in-process http_server, whose keys come from the
// simulator's /webhook_verification_key/get over HTTP, against a scratch database.
#include <catch2/catch.hpp>
#include <simdjson.h>

#include <atomic>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "connectors/plaid/webhook_verify.hpp"
#include "core/json_text.hpp"
#include "ledger/tenants.hpp"
#include "queue/run_blocking.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/raw_http.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"
#include "connectors/plaid/webhooks.hpp"
#include "worker/http_server.hpp"

using namespace bankworker;
namespace asio = boost::asio;

namespace {

std::string json_string(const std::string& json, std::string_view field) {
  simdjson::dom::parser parser;
  std::string_view value;
  if (parser.parse(json)[field].get(value) != simdjson::SUCCESS) return {};
  return std::string(value);
}

// The fetcher the route gets: the simulator's real endpoint, called on the blocking pool (libcurl's
// easy API must not run on an io_context thread). `pool` and `calls` outlive the route.
asio::awaitable<std::optional<plaid::verification_key>> fetch_from_sim(asio::thread_pool& pool, std::string base_url,
                                                                        std::atomic<int>* calls, std::string kid) {
  ++*calls;
  // The lambda captures pointers into this coroutine's frame (alive until the co_await ends), not
  // strings: GCC 12 destroys a lambda temporary's non-trivial captures twice in a co_await
  // expression (valgrind: invalid free).
  const std::string* url = &base_url;
  const std::string* key_id = &kid;
  co_return co_await queue::run_blocking(pool, [url, key_id]() -> std::optional<plaid::verification_key> {
    std::string request = R"({"client_id":"bankworker-sim-client","secret":"bankworker-sim-secret","key_id":)";
    core::append_json_string(*key_id, request);
    request += "}";
    const test::http_result answer = test::http_post(*url + "/webhook_verification_key/get", request);
    if (answer.status == 400 && json_string(answer.body, "error_code") == "INVALID_FIELD") return std::nullopt;
    if (answer.status != 200) throw std::runtime_error("key fetch answered " + std::to_string(answer.status));
    simdjson::dom::parser parser;
    simdjson::dom::element key;
    if (parser.parse(answer.body)["key"].get(key) != simdjson::SUCCESS) throw std::runtime_error("no key in answer");
    return plaid::parse_verification_key(simdjson::minify(key));
  });
}

struct plaid_webhook_fixture {
  test::scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool();
  std::unique_ptr<db::key_store> keys = test::test_key_store();
  core::uuid tenant = ledger::create_tenant(*connections, *keys, "Plaid Hooks Ltd");
  core::uuid connection = core::uuid::parse("6f1c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f").value();
  test::child_process sim{PLAID_SIM_BINARY, {"--port", "0", "--items", "2", "--transactions", "3"}, {}};
  std::string sim_url = test::base_url_from(sim);
  std::string item_id;
  std::string other_item_id;  // an item no tenant holds
  asio::io_context io;
  asio::thread_pool blocking{4};
  bankworker::service::metrics_registry metrics;
  bankworker::service::logger log{bankworker::service::log_level::warn};
  std::atomic<int> key_fetches{0};
  std::unique_ptr<plaid::plaid_webhooks> webhooks;
  std::unique_ptr<worker::http_server> server;
  std::vector<std::thread> threads;

  explicit plaid_webhook_fixture(plaid::plaid_webhook_settings settings = {}, db::pool* pool = nullptr) {
    const test::http_result items = test::http_post(sim_url + "/sim/items", "{}");
    REQUIRE(items.status == 200);
    simdjson::dom::parser parser;
    simdjson::dom::array list;
    REQUIRE(parser.parse(items.body)["items"].get(list) == simdjson::SUCCESS);
    REQUIRE(list.size() == 2);
    item_id = std::string(list.at(0)["item_id"].get_string().value());
    other_item_id = std::string(list.at(1)["item_id"].get_string().value());
    {
      auto admin = database.connect_as_admin();
      pqxx::work tx(*admin);
      tx.exec_params0(
          "INSERT INTO bankworker.connections (tenant_id, connection_id, environment, item_id, status)"
          " VALUES ($1::text::uuid, $2::text::uuid, 'sandbox', $3, 'active')",
          tenant.to_string(), connection.to_string(), item_id);
      tx.commit();
    }
    plaid::verification_key_fetcher fetcher = [this](std::string kid) {
      return fetch_from_sim(blocking, sim_url, &key_fetches, std::move(kid));
    };
    webhooks = std::make_unique<plaid::plaid_webhooks>(pool != nullptr ? *pool : *connections, *keys, blocking,
                                                        metrics, log, std::move(fetcher), std::move(settings));
    worker::http_settings http;
    http.listen = {"127.0.0.1", 0};
    server = std::make_unique<worker::http_server>(io, http, std::vector<worker::http_route>{webhooks->route()});
    server->start();
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }

  ~plaid_webhook_fixture() {
    server->stop();
    io.stop();
    for (auto& thread : threads) thread.join();
    blocking.join();
  }

  std::string route_url() const { return "http://127.0.0.1:" + std::to_string(server->port()) + "/webhooks/plaid"; }

  // Has the simulator sign and deliver one webhook to the route; returns the route's status.
  long send(std::string_view extra_fields, const std::string& item = {}) {
    std::string request = R"({"item_id":")" + (item.empty() ? item_id : item) + R"(","url":")" + route_url() + "\"";
    if (!extra_fields.empty()) request += "," + std::string(extra_fields);
    request += "}";
    const test::http_result delivery = test::http_post(sim_url + "/sim/webhooks/send", request);
    REQUIRE(delivery.status == 200);
    simdjson::dom::parser parser;
    std::int64_t status = 0;
    REQUIRE(parser.parse(delivery.body)["status"].get(status) == simdjson::SUCCESS);
    return static_cast<long>(status);
  }

  int count(const std::string& sql) const {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1(sql)[0].as<int>();
  }
  int jobs(std::string_view kind) const {
    return count("SELECT count(*) FROM bankworker.jobs WHERE kind = '" + std::string(kind) +
                 "' AND connection_id = '" + connection.to_string() + "'");
  }
  int all_jobs() const { return count("SELECT count(*) FROM bankworker.jobs"); }
  int audit_rows() const { return count("SELECT count(*) FROM bankworker.audit_log"); }
  std::string connection_row() const {
    auto admin = database.connect_as_admin();
    pqxx::read_transaction tx(*admin);
    return tx.exec1("SELECT row_to_json(c)::text FROM bankworker.connections c")[0].as<std::string>();
  }
  std::uint64_t outcome(std::string_view name) const {
    const std::string text = metrics.render();
    const std::string series =
        R"(bankworker_webhook_requests_total{provider="plaid",outcome=")" + std::string(name) + "\"} ";
    const std::size_t at = text.find(series);
    return at == std::string::npos ? 0 : std::stoull(text.substr(at + series.size()));
  }
};

}  // namespace

TEST_CASE("a valid SYNC_UPDATES_AVAILABLE enqueues one plaid.sync for the item's connection", "[pg][plaid][webhook]") {
  plaid_webhook_fixture fixture;
  CHECK(fixture.send("") == 200);
  CHECK(fixture.jobs("plaid.sync") == 1);
  // A second delivery while that job waits adds nothing, and the key comes from the cache.
  CHECK(fixture.send("") == 200);
  CHECK(fixture.jobs("plaid.sync") == 1);
  CHECK(fixture.all_jobs() == 1);
  CHECK(fixture.key_fetches == 1);
  CHECK(fixture.outcome("sync_requested") == 2);
}

TEST_CASE("every forged or altered webhook is answered 400 and changes nothing", "[pg][plaid][webhook]") {
  plaid_webhook_fixture fixture;
  const std::string row_before = fixture.connection_row();
  const int audit_before = fixture.audit_rows();
  for (const std::string code : {R"("webhook_code":"SYNC_UPDATES_AVAILABLE")", R"("webhook_code":"ERROR")",
                                 R"("webhook_code":"USER_PERMISSION_REVOKED")"}) {
    for (const std::string attack : {R"("signing":"wrong_key")", R"("signing":"unknown_kid")",
                                     R"("signing":"expired_key")", R"("signing":"stale_iat")",
                                     R"("signing":"alg_none")", R"("signing":"alg_hs256")", R"("alter_body":true)"}) {
      INFO(code << " " << attack);
      CHECK(fixture.send(code + "," + attack) == 400);
    }
  }
  CHECK(fixture.all_jobs() == 0);
  CHECK(fixture.connection_row() == row_before);
  CHECK(fixture.audit_rows() == audit_before);
  CHECK(fixture.outcome("bad_signature") == 3);
  CHECK(fixture.outcome("unknown_kid") == 3);
  CHECK(fixture.outcome("key_expired") == 3);
  CHECK(fixture.outcome("stale") == 3);
  CHECK(fixture.outcome("alg_not_allowed") == 6);
  CHECK(fixture.outcome("body_mismatch") == 3);
  // alg none and HS256 never cost a key fetch; each unknown kid costs one.
  CHECK(fixture.key_fetches == 1 + 1 + 3);
}

TEST_CASE("ITEM ERROR ITEM_LOGIN_REQUIRED moves an active connection to needs_reauth with an audit row",
          "[pg][plaid][webhook]") {
  plaid_webhook_fixture fixture;
  const int audit_before = fixture.audit_rows();
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED")") == 200);
  CHECK(fixture.count("SELECT count(*) FROM bankworker.connections WHERE status = 'needs_reauth'"
                      " AND last_error LIKE 'ITEM_LOGIN_REQUIRED%'") == 1);
  CHECK(fixture.audit_rows() == audit_before + 1);
  CHECK(fixture.count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'connection.needs_reauth'"
                      " AND actor = 'worker' AND subject = '" + fixture.connection.to_string() + "'") == 1);
  // Only from active: a second error changes nothing and writes no second row.
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"ITEM_LOCKED")") == 200);
  CHECK(fixture.audit_rows() == audit_before + 1);
  CHECK(fixture.outcome("no_change") == 1);
  CHECK(fixture.all_jobs() == 0);
}

TEST_CASE("USER_PERMISSION_REVOKED, or an ERROR saying so, enqueues one plaid.revoke", "[pg][plaid][webhook]") {
  plaid_webhook_fixture fixture;
  CHECK(fixture.send(R"("webhook_code":"USER_PERMISSION_REVOKED")") == 200);
  CHECK(fixture.jobs("plaid.revoke") == 1);
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"ITEM_NOT_FOUND")") == 200);
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"USER_PERMISSION_REVOKED")") == 200);
  CHECK(fixture.jobs("plaid.revoke") == 1);
  CHECK(fixture.all_jobs() == 1);
}

TEST_CASE("a verified webhook for an item no tenant holds, or of a kind we do not act on, is 200 and changes nothing",
          "[pg][plaid][webhook]") {
  plaid_webhook_fixture fixture;
  const std::string row_before = fixture.connection_row();
  CHECK(fixture.send("", fixture.other_item_id) == 200);
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED")", fixture.other_item_id) == 200);
  CHECK(fixture.outcome("unknown_item") == 2);
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"INSTITUTION_DOWN")") == 200);
  CHECK(fixture.outcome("ignored") == 1);
  CHECK(fixture.all_jobs() == 0);
  CHECK(fixture.connection_row() == row_before);
}

TEST_CASE("random kids are fetched at most key_fetches_max times per window", "[pg][plaid][webhook]") {
  plaid::plaid_webhook_settings settings;
  settings.key_fetches_max = 2;
  settings.key_fetch_window = std::chrono::seconds(3600);
  plaid_webhook_fixture fixture(settings);
  for (int i = 0; i < 6; ++i) {
    const long status = fixture.send(R"("signing":"unknown_kid")");
    CHECK((status == 400 || status == 503));
  }
  CHECK(fixture.key_fetches == 2);
  CHECK(fixture.outcome("unknown_kid") == 2);
  CHECK(fixture.outcome("key_unavailable") == 4);
  CHECK(fixture.all_jobs() == 0);
}

TEST_CASE("a verified webhook while the database is unreachable is answered 503", "[pg][plaid][webhook]") {
  db::pool_settings dead_settings;
  dead_settings.connections = 1;
  dead_settings.checkout_timeout = std::chrono::milliseconds(500);
  db::pool dead(crypto::secret::copy_of("postgresql://nobody@127.0.0.1:1/none"), dead_settings);
  plaid_webhook_fixture fixture({}, &dead);
  CHECK(fixture.send("") == 503);
  CHECK(fixture.outcome("unavailable") == 1);
  // Verification failures are still 400: nothing reaches the database before the signature.
  CHECK(fixture.send(R"("signing":"wrong_key")") == 400);
  CHECK(fixture.all_jobs() == 0);
}

namespace {

std::string base64url(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : bytes) {
    buffer = (buffer << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(buffer >> bits) & 63];
    }
  }
  if (bits > 0) out += alphabet[(buffer << (6 - bits)) & 63];
  return out;
}

// A token of the right shape naming a kid nobody published, signed with nothing.
std::string forged_token(std::mt19937_64& random) {
  const std::string kid = std::to_string(random()) + "-" + std::to_string(random());
  const std::string header = R"({"alg":"ES256","kid":")" + kid + R"(","typ":"JWT"})";
  const std::string payload = R"({"iat":)" + std::to_string(std::time(nullptr)) +
                              R"(,"request_body_sha256":"0000000000000000000000000000000000000000000000000000000000000000"})";
  return base64url(header) + "." + base64url(payload) + "." + base64url(std::string(64, 'x'));
}

}  // namespace

TEST_CASE("a forger's random kids from one address spend its own budget: a genuine new key still verifies",
          "[pg][plaid][webhook][attack]") {
  plaid_webhook_fixture fixture;  // key_fetches_max 10 per sender address
  CHECK(fixture.send("") == 200);  // Plaid's current key, fetched once
  REQUIRE(fixture.key_fetches == 1);
  std::mt19937_64 random(2325);
  const std::string body = R"({"webhook_type":"TRANSACTIONS","webhook_code":"SYNC_UPDATES_AVAILABLE","item_id":"x"})";
  std::map<int, int> statuses;
  auto forger = std::make_unique<test::raw_connection>(fixture.server->port(), "127.0.0.11");
  for (int i = 0; i < 500; ++i) {
    const std::string request = "POST /webhooks/plaid HTTP/1.1\r\nHost: x\r\nPlaid-Verification: " +
                                forged_token(random) + "\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\n\r\n" + body;
    std::string response;
    if (forger->send(request)) response = forger->read_response();
    if (test::status_of(response) == 0) {
      forger = std::make_unique<test::raw_connection>(fixture.server->port(), "127.0.0.11");
      REQUIRE(forger->send(request));
      response = forger->read_response();
    }
    ++statuses[test::status_of(response)];
  }
  CHECK(statuses[400] == 10);   // its budget: ten kids asked of Plaid, each unknown
  CHECK(statuses[503] == 490);  // the rest are refused before any fetch
  CHECK(fixture.key_fetches == 1 + 10);
  // Plaid rotates its key; the next genuine webhook names the new kid, from Plaid's own address.
  CHECK_THAT(test::http_post(fixture.sim_url + "/sim/webhooks/rotate_key", "{}").body, Catch::Contains("\"kid\""));
  CHECK(fixture.send(R"("webhook_code":"ERROR","error_code":"ITEM_LOGIN_REQUIRED")") == 200);
  CHECK(fixture.key_fetches == 1 + 10 + 1);
  CHECK(fixture.count("SELECT count(*) FROM bankworker.connections WHERE status = 'needs_reauth'") == 1);
  CHECK(fixture.all_jobs() == 1);  // the first webhook's sync; the forgeries changed nothing
}

TEST_CASE("a verified Plaid webhook replayed inside its age window is 409 and changes nothing",
          "[pg][plaid][webhook][attack]") {
  plaid_webhook_fixture fixture;
  const std::string request = R"({"item_id":")" + fixture.item_id + R"(","url":")" + fixture.route_url() + "\"}";
  const test::http_result delivery = test::http_post(fixture.sim_url + "/sim/webhooks/send", request);
  REQUIRE(delivery.status == 200);
  REQUIRE_THAT(delivery.body, Catch::Contains("\"status\":200"));
  const std::string body = json_string(delivery.body, "body");
  const std::string token = json_string(delivery.body, "plaid_verification");
  REQUIRE(!token.empty());
  REQUIRE(fixture.jobs("plaid.sync") == 1);
  {
    // The sync ran and finished: a replay accepted now would enqueue another.
    auto admin = fixture.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec0("DELETE FROM bankworker.jobs");
    tx.commit();
  }
  for (int i = 0; i < 3; ++i) {
    const test::http_result replay = test::http_post(fixture.route_url(), body, {"Plaid-Verification: " + token});
    CHECK(replay.status == 409);
    CHECK_THAT(replay.body, Catch::Contains("replayed"));
  }
  CHECK(fixture.all_jobs() == 0);
  CHECK(fixture.outcome("replayed") == 3);
  CHECK(fixture.outcome("sync_requested") == 1);
  // A fresh token for the same body (Plaid's own retry) is a new webhook.
  CHECK(fixture.send("") == 200);
  CHECK(fixture.jobs("plaid.sync") == 1);
}

TEST_CASE("known Plaid keys are fetched on the schedule, not per request", "[pg][plaid][webhook]") {
  plaid::plaid_webhook_settings settings;
  settings.key_ttl = std::chrono::seconds(1);
  plaid_webhook_fixture fixture(settings);
  asio::co_spawn(fixture.io, fixture.webhooks->run_key_refresh(), asio::detached);
  CHECK(fixture.send("") == 200);
  const int after_first = fixture.key_fetches;
  CHECK(after_first == 1);
  CHECK(test::eventually([&] { return fixture.key_fetches >= after_first + 2; }, std::chrono::seconds(5)));
  fixture.webhooks->stop_key_refresh();
  std::this_thread::sleep_for(std::chrono::milliseconds(1'500));
  const int settled = fixture.key_fetches;
  for (int i = 0; i < 5; ++i) CHECK(fixture.send("") == 200);
  CHECK(fixture.key_fetches == settled);  // the cached key served them all
}
