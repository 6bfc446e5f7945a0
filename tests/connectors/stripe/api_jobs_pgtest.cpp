// The Stripe API side end to end in one process: webhooks delivered by the real stripe_sim binary
// to the real webhook route, the real inbox, dispatcher, stripe.post and stripe.recover handlers,
// the API client over the real HTTP client against the simulator's /v1 API, and the private
// PostgreSQL. Fees and net come from the simulator's balance transactions; recovery finds events
// the simulator created without delivering them.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>
#include <simdjson.h>

#include "connectors/http/client.hpp"
#include "connectors/stripe/api_client.hpp"
#include "connectors/stripe/api_jobs.hpp"
#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/store.hpp"
#include "connectors/stripe/webhooks.hpp"
#include "db/currencies.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"
#include "worker/dispatcher.hpp"
#include "worker/http_server.hpp"
#include "worker/scheduler.hpp"

using namespace std::chrono_literals;
using bankworker::core::uuid;
using bankworker::test::child_process;
using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace db = bankworker::db;
namespace ledger = bankworker::ledger;
namespace queue = bankworker::queue;
namespace worker = bankworker::worker;
namespace stripe = bankworker::stripe;
namespace http = bankworker::connectors::http;
namespace crypto = bankworker::crypto;

namespace {

constexpr const char* api_key = "rk_test_stripe_api_pgtest_key_9Zq";
constexpr const char* webhook_secret = "whsec_stripe_api_pgtest";

// A temporary file the world's logger writes to, so a test can read every log line.
struct log_file {
  std::string path = "/tmp/bankworker_stripe_api_" + std::to_string(::getpid()) + "_" +
                     std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".log";
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  ~log_file() {
    ::close(fd);
    std::remove(path.c_str());
  }
  std::string text() const {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
};

// A tenant with a webhook endpoint, the Stripe simulator, and everything that posts and recovers.
struct stripe_world {
  // `platform_key`: the worker's platform key (empty: none).
  explicit stripe_world(bool with_api = true, std::string_view platform_key = {})
      : sim(STRIPE_SIM_BINARY, {"--port", "0", "--seed", "11", "--api-key", api_key}, {}),
        sim_url(bankworker::test::base_url_from(sim)),
        connections([&] {
          db::pool_settings pool_config;
          pool_config.connections = 8;
          return database.worker_pool(std::move(pool_config));
        }()),
        keys(bankworker::test::test_key_store()),
        tenant(ledger::create_tenant(*connections, *keys, "stripe tenant", "test")),
        currencies([&] {
          auto lease = connections->checkout();
          pqxx::read_transaction tx(lease.connection());
          return db::load_currencies(tx);
        }()),
        jobs(*connections, queue::queue_settings{}),
        log(bankworker::service::log_level::debug, logs.fd),
        http_client(io, http::client_settings{}),
        api(http_client, api_settings(sim_url)),
        inbox(*connections, {}, stripe::enqueue_stripe_posts()),
        handlers(*connections, *keys, inbox, api, currencies,
                 platform_key.empty() ? crypto::secret{} : crypto::secret::copy_of(platform_key), log, recovery_settings()),
        webhooks(*connections, *keys, inbox, blocking, metrics, log, {}),
        listen_url(crypto::secret::copy_of(database.url())),
        dispatcher(io, blocking, jobs, &listen_url, dispatcher_settings(), log) {
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      stripe::add_webhook_secret(tx, *keys, tenant, crypto::secret::copy_of(webhook_secret), "test");
    });
    handlers.set_metrics(metrics);
    dispatcher.add_handler(std::string(stripe::stripe_post_kind),
                           stripe::stripe_post_handler(*connections, currencies, with_api ? &handlers : nullptr));
    dispatcher.add_handler(std::string(stripe::stripe_recover_kind), handlers.recover_handler());
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [](std::exception_ptr) {});
    worker::http_settings server_settings;
    server_settings.listen = {"127.0.0.1", 0};
    std::vector<worker::http_route> routes;
    routes.push_back(webhooks.tenant_route());
    server = std::make_unique<worker::http_server>(io, server_settings, std::move(routes));
    server->start();
    runners.emplace_back([this] { io.run(); });
    runners.emplace_back([this] { io.run(); });
  }

  ~stripe_world() {
    server->stop();
    dispatcher.stop();
    for (auto& runner : runners) runner.join();
    http_client.shutdown();
    blocking.join();
  }

  static stripe::api_settings api_settings(const std::string& url) {
    stripe::api_settings settings;
    settings.base_url = url;
    settings.request_timeout = 5s;
    return settings;
  }
  static stripe::stripe_api_job_settings recovery_settings() {
    stripe::stripe_api_job_settings settings;
    settings.recovery_page_limit = 2;  // small pages, so paging is exercised
    return settings;
  }
  static worker::dispatcher_settings dispatcher_settings() {
    worker::dispatcher_settings settings;
    settings.poll_interval = 100ms;
    return settings;
  }

  void set_key(const char* key) {
    db::with_tenant(*connections, tenant,
                    [&](pqxx::work& tx) { stripe::set_api_key(tx, *keys, tenant, crypto::secret::copy_of(key), "test"); });
  }

  // Triggers a scenario at the simulator; delivered to our webhook route unless `deliver` is false.
  std::vector<std::string> trigger(const std::string& scenario, bool deliver = true) {
    const std::string hook = "http://127.0.0.1:" + std::to_string(server->port()) + "/webhooks/stripe/" + tenant.to_string();
    const std::string body = "{" + scenario + ",\"mode\":\"valid\",\"secret\":\"" + webhook_secret +
                             "\",\"deliver_to\":\"" + (deliver ? hook : "") + "\"}";
    const auto answer = bankworker::test::http_post(sim_url + "/sim/trigger", body);
    REQUIRE(answer.status == 200);
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(answer.body).get(doc) == simdjson::SUCCESS);
    std::vector<std::string> ids;
    for (simdjson::dom::element id : simdjson::dom::array(doc["events"])) ids.emplace_back(std::string_view(id));
    if (deliver) {
      for (simdjson::dom::element status : simdjson::dom::array(doc["statuses"])) CHECK(std::int64_t(status) == 200);
    }
    return ids;
  }

  long count(const std::string& sql, const std::string& argument = "") {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    return argument.empty() ? tx.exec1(sql)[0].as<long>() : tx.exec_params1(sql, argument)[0].as<long>();
  }
  std::string text(const std::string& sql, const std::string& argument = "") {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    const auto rows = argument.empty() ? tx.exec(sql) : tx.exec_params(sql, argument);
    return rows.empty() || rows[0][0].is_null() ? std::string() : rows[0][0].as<std::string>();
  }
  long balance(const std::string& account) {
    return count("SELECT coalesce(sum(amount_minor), 0) FROM bankworker.journal_lines WHERE account_code = $1", account);
  }
  long entries(const std::string& key) {
    return count("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key = $1", key);
  }
  std::string charge_of(const std::string& event_id) {
    return text("SELECT body::jsonb->'data'->'object'->>'id' FROM bankworker.stripe_events WHERE event_id = $1", event_id);
  }
  long api_calls(const std::string& what) {
    const auto answer = bankworker::test::http_get(sim_url + "/sim/api_calls");
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(answer.body).get(doc) == simdjson::SUCCESS);
    return static_cast<long>(std::int64_t(doc[what]));
  }

  // Waits until no stripe job waits or runs (a delivered event's job is enqueued with it, before
  // the delivery is answered).
  void settle(std::chrono::seconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (count("SELECT count(*) FROM bankworker.jobs WHERE kind LIKE 'stripe.%'"
                " AND state IN ('available', 'running', 'retryable')") == 0) {
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
    FAIL("stripe jobs did not settle: " << text("SELECT string_agg(kind || ' ' || state || ' ' || coalesce(last_error, ''), '; ') FROM bankworker.jobs"));
  }

  // Runs stripe.post again for each event, as a re-delivery would.
  void post_again(const std::vector<std::string>& event_ids) {
    for (const std::string& id : event_ids) {
      db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
        queue::new_job job;
        job.tenant = tenant;
        job.kind = std::string(stripe::stripe_post_kind);
        job.payload_json = "{\"event_id\":\"" + id + "\"}";
        queue::enqueue(tx, std::vector<queue::new_job>{job});
      });
    }
  }

  // Enqueues the recovery the way the scheduler does, and waits for it.
  std::size_t recover() {
    const std::size_t enqueued = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return stripe::schedule_stripe_recovery(tx, handlers.has_platform_key(), 100);
    });
    settle();
    return enqueued;
  }

  log_file logs;
  scratch_database database;
  child_process sim;
  std::string sim_url;
  std::unique_ptr<db::pool> connections;
  std::unique_ptr<db::key_store> keys;
  uuid tenant;
  bankworker::core::currency_table currencies;
  queue::job_queue jobs;
  bankworker::service::logger log;
  bankworker::service::metrics_registry metrics;
  asio::io_context io;
  asio::thread_pool blocking{4};
  http::client http_client;
  stripe::api_client api;
  stripe::inbox inbox;
  stripe::stripe_api_jobs handlers;
  stripe::stripe_webhooks webhooks;
  crypto::secret listen_url;
  worker::dispatcher dispatcher;
  std::unique_ptr<worker::http_server> server;
  std::vector<std::thread> runners;
};

}  // namespace

TEST_CASE("a charge posts its gross, the fee from its balance transaction and leaves the net in clearing, once",
          "[pg][stripe][stripe_api]") {
  stripe_world world;
  world.set_key(api_key);
  const auto events = world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
  REQUIRE(events.size() == 2);
  world.settle();
  const std::string charge = world.charge_of(events[0]);
  REQUIRE(charge.starts_with("ch_"));
  CHECK(world.entries(charge + ":gross") == 1);
  CHECK(world.entries(charge + ":fee") == 1);
  const long fee = 2000 * 29 / 1000 + 30;
  CHECK(world.balance("stripe.fees") == fee);
  CHECK(world.balance("stripe.clearing") == 2000 - fee);  // the net
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'") == 2);
  // The fee entry and the gross are balanced, and both events stored once.
  CHECK(world.count("SELECT count(*) FROM (SELECT entry_id FROM bankworker.journal_lines GROUP BY entry_id, currency"
                    " HAVING sum(amount_minor) <> 0) unbalanced") == 0);
  // Both events settle the same charge (payment_intent.succeeded names it by id, so its leg is
  // fetched too since issue #16): the second fetches nothing when the first posted its fee before
  // it looked, and the same balance transaction once more when the two ran side by side.
  const long fetched = world.api_calls("balance_transactions");
  CHECK(fetched >= 1);
  CHECK(fetched <= 2);
  CHECK(world.count("SELECT count(*) FROM bankworker.external_calls WHERE provider = 'stripe'"
                    " AND endpoint = '/v1/balance_transactions' AND http_status = 200") == fetched);

  // Re-delivery: the same events again through the inbox, and stripe.post run again for each.
  const long entries_before = world.count("SELECT count(*) FROM bankworker.journal_entries");
  world.post_again(events);
  world.settle();
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == entries_before);
  CHECK(world.balance("stripe.clearing") == 2000 - fee);
  CHECK(world.api_calls("balance_transactions") == fetched);  // posted events are not fetched again
}

// The balance transactions Stripe holds for the events it sent (every leg's: named by id on the
// money object, or listed on a dispute), as GET /v1/balance_transactions answers them: net per
// settlement currency, in Stripe's units (USD's are our minor units).
std::map<std::string, long> stripe_net_by_currency(stripe_world& world) {
  const auto listed = bankworker::test::http_get(world.sim_url + "/v1/events?limit=100",
                                                 {std::string("Authorization: Bearer ") + api_key});
  REQUIRE(listed.status == 200);
  simdjson::dom::parser parser;
  const simdjson::dom::element list = parser.parse(listed.body);
  std::set<std::string> ids;
  for (const auto event : simdjson::dom::array(list["data"])) {
    const simdjson::dom::element object = event["data"]["object"];
    for (const char* name : {"balance_transaction", "failure_balance_transaction"}) {
      std::string_view id;
      if (object[name].get(id) == simdjson::SUCCESS) ids.emplace(id);
    }
    simdjson::dom::array embedded;
    if (object["balance_transactions"].get(embedded) == simdjson::SUCCESS) {
      for (const auto bt : embedded) ids.emplace(std::string_view(bt["id"]));
    }
  }
  std::map<std::string, long> net;
  for (const std::string& id : ids) {
    const auto got = bankworker::test::http_get(world.sim_url + "/v1/balance_transactions/" + id,
                                                {std::string("Authorization: Bearer ") + api_key});
    REQUIRE(got.status == 200);
    simdjson::dom::parser bt_parser;
    std::string error;
    const auto bt = stripe::parse_balance_transaction(bt_parser, got.body, error);
    REQUIRE(bt);
    std::string code = bt->currency;
    for (char& ch : code) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    net[code] += bt->net;
  }
  return net;
}

// stripe.clearing per currency, zero balances left out: what Stripe's balance should hold.
std::map<std::string, long> clearing_by_currency(stripe_world& world) {
  std::map<std::string, long> out;
  const auto admin = world.database.connect_as_admin();
  pqxx::work tx(*admin);
  for (const auto& row : tx.exec("SELECT currency, sum(amount_minor) FROM bankworker.journal_lines"
                                 " WHERE account_code = 'stripe.clearing' GROUP BY currency")) {
    if (row[1].as<long>() != 0) out[row[0].as<std::string>()] = row[1].as<long>();
  }
  return out;
}

TEST_CASE("KWD and JPY charges settled in USD, partly refunded and disputed, leave stripe.clearing equal to Stripe's"
          " balance transactions in every currency", "[pg][stripe][stripe_api][settlement]") {
  stripe_world world;
  world.set_key(api_key);
  // 10.000 KWD and 5,000 JPY, each settled in USD at the simulator's 0.8; a part of each refunded
  // (refund.created and charge.refunded name the refund's balance transaction by id) and a part
  // disputed (the dispute lists its withdrawal with its 15.00 USD fee).
  for (const char* currency : {"kwd", "jpy"}) {
    const std::string money = std::string(R"(,"currency":")") + currency + "\"";
    world.trigger(std::string(R"("kind":"payment","amount":)") + (currency[0] == 'k' ? "10000" : "5000") + money +
                  R"(,"settlement_currency":"usd")");
    world.trigger(R"("kind":"refund","amount":2500)" + money);
    world.trigger(R"("kind":"dispute","amount":3000)" + money);
  }
  world.trigger(R"("kind":"application_fee","amount":120,"currency":"usd")");
  world.trigger(R"("kind":"payout_failed","amount":700,"currency":"usd")");
  world.settle();
  // Everything posted, but charge.dispute.created, which moves no money.
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE state <> 'posted'"
                    " AND type <> 'charge.dispute.created'") == 0);

  const std::map<std::string, long> stripe_net = stripe_net_by_currency(world);
  REQUIRE(stripe_net.size() == 1);  // every balance transaction is in USD
  const auto clearing = [&] { return clearing_by_currency(world); };
  // To the minor unit, and nothing left in KWD or JPY: Stripe never held either.
  CHECK(clearing() == stripe_net);
  CHECK(world.count("SELECT count(*) FROM (SELECT currency FROM bankworker.journal_lines GROUP BY currency"
                    " HAVING sum(amount_minor) <> 0) unbalanced") == 0);

  // Every event posted again changes nothing.
  const long entries_before = world.count("SELECT count(*) FROM bankworker.journal_entries");
  std::vector<std::string> event_ids;
  {
    const auto admin = world.database.connect_as_admin();
    pqxx::work tx(*admin);
    for (const auto& row : tx.exec("SELECT event_id FROM bankworker.stripe_events")) event_ids.push_back(row[0].as<std::string>());
  }
  REQUIRE(event_ids.size() == 15);
  world.post_again(event_ids);
  world.settle();
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == entries_before);
  CHECK(clearing() == stripe_net);
}

TEST_CASE("without a key a KWD charge settled in USD posts its presentment side and awaits settlement; once a key is"
          " set the recovery completes it once", "[pg][stripe][stripe_api][settlement]") {
  stripe_world world;
  const auto events = world.trigger(R"("kind":"payment","amount":10000,"currency":"kwd","settlement_currency":"usd")");
  REQUIRE(events.size() == 2);
  world.settle();
  const std::string charge = world.charge_of(events[0]);
  REQUIRE(charge.starts_with("ch_"));
  const auto clearing = [&] { return clearing_by_currency(world); };
  const auto unbalanced = [&] {
    return world.count("SELECT count(*) FROM (SELECT currency FROM bankworker.journal_lines GROUP BY currency"
                       " HAVING sum(amount_minor) <> 0) unbalanced");
  };
  // The presentment side: 10.000 KWD, nothing in USD (no rate is guessed), no fee, no call made.
  CHECK(world.entries(charge + ":gross") == 1);
  CHECK(world.entries(charge + ":fx") == 0);
  CHECK(world.entries(charge + ":fee") == 0);
  CHECK(clearing() == std::map<std::string, long>{{"KWD", 10000}});
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_lines WHERE currency = 'USD'") == 0);
  CHECK(unbalanced() == 0);
  CHECK(world.api_calls("balance_transactions") == 0);
  // Both events (charge.succeeded, payment_intent.succeeded) are posted and await the charge's leg.
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE state = 'posted'"
                    " AND settlement_awaited_since IS NOT NULL AND settlement_awaited = ARRAY[$1::text]",
                    charge + ":gross") == 2);
  CHECK(world.count("SELECT events FROM bankworker.stripe_settlement_gauges()") == 2);

  // A key, and the recovery job's next run: it hands both events back to stripe.post, which
  // fetches the balance transaction and posts the conversion and the fee once.
  world.set_key(api_key);
  CHECK(world.recover() == 1);
  world.settle();
  CHECK(world.entries(charge + ":gross") == 1);
  CHECK(world.entries(charge + ":fx") == 1);
  CHECK(world.entries(charge + ":fee") == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE settlement_awaited_since IS NOT NULL") == 0);
  CHECK(world.count("SELECT events FROM bankworker.stripe_settlement_gauges()") == 0);
  const std::map<std::string, long> stripe_net = stripe_net_by_currency(world);
  REQUIRE(stripe_net.size() == 1);
  CHECK(stripe_net.begin()->first == "USD");
  CHECK(clearing() == stripe_net);
  CHECK(unbalanced() == 0);

  // Replaying the events, and another recovery run, change nothing and fetch nothing more.
  const long entries_before = world.count("SELECT count(*) FROM bankworker.journal_entries");
  const long fetched = world.api_calls("balance_transactions");
  world.post_again(events);
  world.settle();
  world.recover();
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == entries_before);
  CHECK(world.api_calls("balance_transactions") == fetched);
  CHECK(clearing() == stripe_net);
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE settlement_awaited_since IS NOT NULL") == 0);
}

TEST_CASE("a 429 from the balance transaction call retries after Retry-After and then posts gross and fee together",
          "[pg][stripe][stripe_api]") {
  stripe_world world;
  world.set_key(api_key);
  REQUIRE(bankworker::test::http_post(world.sim_url + "/sim/fail",
                                      R"({"path":"/v1/balance_transactions","status":429,"count":1,"retry_after":"1"})")
              .status == 200);
  const auto events = world.trigger(R"("kind":"payment","amount":5000,"currency":"usd")");
  world.settle();
  const std::string charge = world.charge_of(events[0]);
  CHECK(world.entries(charge + ":gross") == 1);
  CHECK(world.entries(charge + ":fee") == 1);
  CHECK(world.balance("stripe.fees") == 5000 * 29 / 1000 + 30);
  CHECK(world.count("SELECT count(*) FROM bankworker.external_calls WHERE provider = 'stripe' AND http_status = 429") == 1);
  // Both calls are in the provider metrics too, by endpoint and outcome, with their latency.
  const std::string metrics = world.metrics.render();
  CHECK_THAT(metrics, Catch::Contains("bankworker_provider_calls_total{provider=\"stripe\",endpoint=\"/v1/balance_transactions\","
                                      "outcome=\"rate_limited\"} 1\n") &&
                          Catch::Contains("bankworker_provider_calls_total{provider=\"stripe\",endpoint=\"/v1/balance_transactions\","
                                          "outcome=\"ok\"} 1\n") &&
                          Catch::Contains("bankworker_provider_call_duration_seconds_count{provider=\"stripe\","
                                          "endpoint=\"/v1/balance_transactions\"} 2\n"));
  // The 429 met whichever of the payment's events fetched first (with every leg fetched, both
  // charge.succeeded and payment_intent.succeeded read the charge's balance transaction): that
  // job's second attempt posted.
  std::string ids;
  for (const std::string& id : events) ids += (ids.empty() ? "" : ",") + id;
  CHECK(world.count("SELECT max(attempt) FROM bankworker.jobs WHERE kind = 'stripe.post'"
                    " AND payload->>'event_id' = ANY(string_to_array($1, ','))",
                    ids) == 2);
}

TEST_CASE("without a key, or without the Stripe API, a charge posts its gross only, as before",
          "[pg][stripe][stripe_api]") {
  SECTION("no key for the tenant") {
    stripe_world world;
    const auto events = world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
    world.settle();
    const std::string charge = world.charge_of(events[0]);
    CHECK(world.entries(charge + ":gross") == 1);
    CHECK(world.entries(charge + ":fee") == 0);
    CHECK(world.balance("stripe.clearing") == 2000);
    CHECK(world.api_calls("balance_transactions") == 0);
  }
  SECTION("no Stripe API configured") {
    stripe_world world(false);
    world.set_key(api_key);
    const auto events = world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
    world.settle();
    CHECK(world.entries(world.charge_of(events[0]) + ":fee") == 0);
    CHECK(world.api_calls("balance_transactions") == 0);
  }
}

TEST_CASE("a wrong key ends the posting as needing user action and posts nothing", "[pg][stripe][stripe_api]") {
  stripe_world world;
  world.set_key("rk_test_not_the_simulator_key");
  const auto events = world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
  world.settle();
  const std::string charge = world.charge_of(events[0]);
  CHECK(world.entries(charge + ":fee") == 0);
  CHECK(world.text("SELECT failure FROM bankworker.jobs WHERE kind = 'stripe.post' AND payload->>'event_id' = $1",
                   events[0]) == "needs_user_action");
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "received");
}

TEST_CASE("recovery stores and posts an event Stripe never delivered, once; a second run changes nothing",
          "[pg][stripe][stripe_api]") {
  stripe_world world;
  world.set_key(api_key);
  const auto delivered = world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
  const auto missed = world.trigger(R"("kind":"payout","amount":1500,"currency":"usd")", false);
  REQUIRE(missed.size() == 1);
  world.settle();
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events WHERE event_id = $1", missed[0]) == 0);

  CHECK(world.recover() == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events") == 3);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", missed[0]) == "posted");
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key LIKE 'po_%:payout'") == 1);
  CHECK(world.text("SELECT last_event_id FROM bankworker.stripe_event_cursors WHERE scope = 'tenant'") == missed[0]);
  CHECK(world.count("SELECT recovered_total FROM bankworker.stripe_event_cursors") == 1);

  const long entries = world.count("SELECT count(*) FROM bankworker.journal_entries");
  const long stripe_posts = world.count("SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post'");
  CHECK(world.recover() == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events") == 3);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == entries);
  CHECK(world.count("SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post'") == stripe_posts);
  CHECK(world.count("SELECT recovered_total FROM bankworker.stripe_event_cursors") == 1);

  // Later misses are read forward from the cursor, across pages (page size 2 here).
  const auto missed_payment = world.trigger(R"("kind":"payment","amount":3000,"currency":"usd")", false);
  const auto missed_payout = world.trigger(R"("kind":"payout","amount":700,"currency":"usd")", false);
  world.recover();
  for (const auto& id : {missed_payment[0], missed_payment[1], missed_payout[0]}) {
    CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", id) == "posted");
  }
  CHECK(world.text("SELECT last_event_id FROM bankworker.stripe_event_cursors WHERE scope = 'tenant'") == missed_payout[0]);
  CHECK(world.count("SELECT recovered_total FROM bankworker.stripe_event_cursors") == 4);
  // The recovered charge got its fee like a delivered one.
  CHECK(world.entries(world.charge_of(missed_payment[0]) + ":fee") == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events") == 6);
  static_cast<void>(delivered);
}

TEST_CASE("recovery is scheduled only for tenants with a key", "[pg][stripe][stripe_api]") {
  stripe_world world;
  CHECK(world.recover() == 0);
  world.set_key(api_key);
  CHECK(world.recover() == 1);
}

TEST_CASE("the API key is sealed, replaced on set, and never logged", "[pg][stripe][stripe_api]") {
  stripe_world world;
  world.set_key("rk_test_first_key_that_is_replaced");
  world.set_key(api_key);
  CHECK(world.count("SELECT count(*) FROM bankworker.sealed_secrets WHERE purpose = 'stripe.api_key'") == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.sealed_secrets WHERE purpose = 'stripe.api_key'"
                    " AND position(convert_to($1, 'UTF8') IN envelope) > 0",
                    api_key) == 0);
  const auto opened = db::with_tenant(*world.connections, world.tenant,
                                      [&](pqxx::work& tx) { return stripe::load_api_key(tx, *world.keys, world.tenant); });
  REQUIRE(opened);
  CHECK(opened->equals(crypto::secret::copy_of(api_key)));
  // A full run at debug level: fees fetched, a 401 for a wrong key, recovery.
  world.trigger(R"("kind":"payment","amount":2000,"currency":"usd")");
  world.trigger(R"("kind":"payout","amount":100,"currency":"usd")", false);
  world.settle();
  world.recover();
  const std::string logged = world.logs.text();
  CHECK(logged.find(api_key) == std::string::npos);
  CHECK(logged.find("rk_test_first") == std::string::npos);
  CHECK(world.count("SELECT count(*) FROM bankworker.jobs WHERE last_error LIKE '%' || $1 || '%'", api_key) == 0);
}

TEST_CASE("bankworker stripe key set seals the tenant's key and prints only its id", "[pg][stripe][stripe_api][cli]") {
  const scratch_database database;
  const bankworker::test::root_key_file root_key;
  const std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                                  {"BANKWORKER_ROOT_KEY_FILE", root_key.path_text()}};
  const auto created = bankworker::test::run_bankworker({"tenant", "create", "--name", "Keyed Ltd"}, env);
  REQUIRE(created.exit_code == 0);
  const std::string tenant = created.out.substr(0, created.out.size() - 1);
  const std::string key_path = root_key.path().parent_path().string() + "/stripe-key";
  {
    std::ofstream(key_path) << api_key << "\n";
  }
  ::chmod(key_path.c_str(), 0600);
  const auto set = bankworker::test::run_bankworker({"stripe", "key", "set", "--tenant", tenant, "--key-file", key_path}, env);
  INFO(set.err);
  REQUIRE(set.exit_code == 0);
  CHECK(uuid::parse(set.out.substr(0, set.out.size() - 1)));
  CHECK(set.out.find(api_key) == std::string::npos);
  CHECK(set.err.find(api_key) == std::string::npos);
  const auto admin = database.connect_as_admin();
  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.sealed_secrets WHERE purpose = 'stripe.api_key'")[0].as<int>() == 1);

  // Not a Stripe key (a webhook secret by mistake): refused as bad usage, nothing sealed.
  {
    std::ofstream(key_path) << webhook_secret << "\n";
  }
  const auto wrong = bankworker::test::run_bankworker({"stripe", "key", "set", "--tenant", tenant, "--key-file", key_path}, env);
  CHECK(wrong.exit_code == 2);
  CHECK(wrong.err.find(webhook_secret) == std::string::npos);
}

TEST_CASE("the scheduler's stripe.recover_events task enqueues one recovery per keyed tenant per interval",
          "[pg][stripe][stripe_api][scheduler]") {
  stripe_world world;
  world.set_key(api_key);
  worker::scheduler periodic(world.io, world.blocking, *world.connections, world.jobs, {}, world.log);
  periodic.add_task(stripe::stripe_recovery_task(*world.connections, false, 3'600'000ms));
  const std::string recover_jobs = "SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.recover'";
  const worker::scheduler_report first = periodic.tick();
  CHECK(std::count(first.tasks_run.begin(), first.tasks_run.end(), std::string(stripe::stripe_recovery_schedule)) == 1);
  CHECK(world.count(recover_jobs) == 1);
  // Claimed once per interval: the next tick does not run it again.
  const worker::scheduler_report second = periodic.tick();
  CHECK(std::count(second.tasks_run.begin(), second.tasks_run.end(), std::string(stripe::stripe_recovery_schedule)) == 0);
  CHECK(world.count(recover_jobs) == 1);
  world.settle();
  CHECK(world.count("SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.recover' AND state = 'succeeded'") == 1);
}

TEST_CASE("a connected account's charge gets its fee and its missed events with the platform key and Stripe-Account",
          "[pg][stripe][stripe_api]") {
  stripe_world world(true, api_key);  // no tenant key: the platform's
  const std::string account = "acct_1ConnectedPgtest";
  db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
    tx.exec_params0("INSERT INTO bankworker.stripe_accounts (tenant_id, account) VALUES ($1::uuid, $2)",
                    world.tenant.to_string(), account);
  });
  const auto events = world.trigger(R"("kind":"payment","amount":4000,"currency":"usd","account":")" + account + "\"");
  world.settle();
  const std::string charge = world.charge_of(events[0]);
  CHECK(world.entries(charge + ":fee") == 1);
  CHECK(world.balance("stripe.clearing") == 4000 - (4000 * 29 / 1000 + 30));

  // The platform's own events (no account) are not this tenant's: recovery reads only the account's.
  world.trigger(R"("kind":"payout","amount":900,"currency":"usd")", false);
  const auto missed = world.trigger(R"("kind":"payout","amount":800,"currency":"usd","account":")" + account + "\"", false);
  CHECK(world.recover() == 1);
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", missed[0]) == "posted");
  CHECK(world.count("SELECT count(*) FROM bankworker.stripe_events") == 3);
  CHECK(world.text("SELECT last_event_id FROM bankworker.stripe_event_cursors WHERE scope = $1", account) == missed[0]);
}

// Thin events (object v2.core.event): stored and acknowledged as delivered, their related object
// fetched from the simulator's API by the stripe.post job and posted through the snapshot rules.
namespace {

// Polls `condition` every 20 ms for up to `timeout`; true once it held.
template <class Condition>
bool eventually(Condition condition, std::chrono::seconds timeout = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

}  // namespace

TEST_CASE("a thin event is stored and acknowledged, and its related payment intent is fetched and posted once",
          "[pg][stripe][stripe_api][thin]") {
  stripe_world world;
  world.set_key(api_key);
  const auto events = world.trigger(R"("kind":"thin_payment","amount":2500,"currency":"usd")");  // 200 checked
  REQUIRE(events.size() == 1);
  CHECK(world.text("SELECT body::jsonb->>'object' FROM bankworker.stripe_events WHERE event_id = $1", events[0]) ==
        "v2.core.event");
  world.settle();
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "posted");
  // The payment intent, then its charge (latest_charge is an id), then the charge's balance
  // transaction: the fee is booked with the gross (issue #16), and the net stays in clearing.
  CHECK(world.api_calls("objects") == 2);
  CHECK(world.api_calls("balance_transactions") == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key LIKE 'ch_%:gross'") == 1);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries WHERE idempotency_key LIKE 'ch_%:fee'") == 1);
  const long fee = 2500 * 29 / 1000 + 30;
  CHECK(world.balance("stripe.clearing") == 2500 - fee);
  CHECK(world.count("SELECT count(*) FROM bankworker.external_calls WHERE provider = 'stripe'"
                    " AND endpoint = '/v1/payment_intents' AND http_status = 200") == 1);

  // The job again: the event is posted, so nothing is fetched or posted a second time.
  world.post_again({events[0]});
  world.settle();
  CHECK(world.api_calls("objects") == 2);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == 2);
  CHECK(world.balance("stripe.clearing") == 2500 - fee);
}

TEST_CASE("a failing fetch of a thin event's related object retries the job and leaves the ledger untouched",
          "[pg][stripe][stripe_api][thin]") {
  // The simulator answers the next `failures` fetches of payment intents with 500; returns the
  // delivered thin event's id.
  const auto thin_payment_with_failing_fetches = [](stripe_world& world, int failures) {
    world.set_key(api_key);
    REQUIRE(bankworker::test::http_post(world.sim_url + "/sim/fail",
                                        R"({"path":"/v1/payment_intents","status":500,"count":)" +
                                            std::to_string(failures) + "}")
                .status == 200);
    const auto events = world.trigger(R"("kind":"thin_payment","amount":2500,"currency":"usd")");
    REQUIRE(events.size() == 1);
    return events;
  };
  SECTION("while the API keeps answering 500, nothing is posted") {
    stripe_world world;
    const auto events = thin_payment_with_failing_fetches(world, 1000);
    CHECK(eventually([&] {
      return world.count("SELECT count(*) FROM bankworker.external_calls WHERE provider = 'stripe'"
                         " AND endpoint = '/v1/payment_intents' AND http_status = 500") >= 2;
    }));
    CHECK(world.count("SELECT max(attempt) FROM bankworker.jobs WHERE kind = 'stripe.post'") >= 2);
    CHECK(world.text("SELECT state FROM bankworker.jobs WHERE kind = 'stripe.post'") != "failed");
    CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == 0);
    CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "received");
  }
  SECTION("once the API answers again, the retry posts the payment once") {
    stripe_world world;
    const auto events = thin_payment_with_failing_fetches(world, 1);
    world.settle();
    CHECK(world.count("SELECT max(attempt) FROM bankworker.jobs WHERE kind = 'stripe.post'") == 2);
    CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "posted");
    // Gross and fee (the charge and its balance transaction are fetched after the payment intent).
    CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == 2);
    CHECK(world.balance("stripe.clearing") == 2500 - (2500 * 29 / 1000 + 30));
  }
}

TEST_CASE("a thin event about an object that moves no money is stored, acknowledged and ignored without a fetch",
          "[pg][stripe][stripe_api][thin]") {
  stripe_world world;
  world.set_key(api_key);
  const auto events = world.trigger(R"("kind":"thin_unknown")");
  REQUIRE(events.size() == 1);
  world.settle();
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "ignored");
  CHECK(world.api_calls("objects") == 0);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == 0);
  CHECK(world.text("SELECT state FROM bankworker.jobs WHERE kind = 'stripe.post'") == "succeeded");
}

TEST_CASE("a thin event about money without a key for the tenant waits for a person, posting nothing",
          "[pg][stripe][stripe_api][thin]") {
  stripe_world world;  // no key set
  const auto events = world.trigger(R"("kind":"thin_payment","amount":2500,"currency":"usd")");
  world.settle();
  CHECK(world.text("SELECT failure FROM bankworker.jobs WHERE kind = 'stripe.post'") == "needs_user_action");
  CHECK(world.text("SELECT state FROM bankworker.stripe_events WHERE event_id = $1", events[0]) == "received");
  CHECK(world.api_calls("objects") == 0);
  CHECK(world.count("SELECT count(*) FROM bankworker.journal_entries") == 0);
}
