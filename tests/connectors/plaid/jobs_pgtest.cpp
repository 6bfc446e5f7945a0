// The Plaid jobs end to end in one process: the real dispatcher, plaid::client over the real HTTP
// client, the real plaid_sim binary and the private PostgreSQL. Every check compares what the
// database holds with the simulator's own truth (/sim/transactions/truth), computed here
// independently of the normaliser.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <pqxx/pqxx>
#include <simdjson.h>

#include "connectors/http/client.hpp"
#include "connectors/plaid/client.hpp"
#include "connectors/stripe/store.hpp"
#include "db/audit.hpp"
#include "db/currencies.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "queue/queue.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/plaid_sim.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/tcp_proxy.hpp"
#include "tests/support/test_keys.hpp"
#include "worker/dispatcher.hpp"
#include "connectors/plaid/jobs.hpp"

using namespace std::chrono_literals;
using bankworker::core::uuid;
using bankworker::test::child_process;
using bankworker::test::scratch_database;
namespace asio = boost::asio;
namespace db = bankworker::db;
namespace ledger = bankworker::ledger;
namespace queue = bankworker::queue;
namespace worker = bankworker::worker;
namespace plaid = bankworker::plaid;
namespace http = bankworker::connectors::http;
namespace crypto = bankworker::crypto;

namespace {

using bankworker::test::expected_row;
using bankworker::test::plaid_simulator;
using bankworker::test::sim_client_id;
using bankworker::test::sim_secret;

struct job_outcome {
  std::string state;
  std::optional<std::string> failure;
  std::string last_error;
};

// A tenant, a dispatcher with the three Plaid handlers, and a simulator, all in this process.
// With `database_through_proxy`, the handlers' and the queue's connections go through a
// tcp_proxy the test can cut, as if PostgreSQL went away.
struct plaid_world {
  explicit plaid_world(std::size_t sync_count, const std::vector<std::string>& sim_args = {},
                       plaid::plaid_job_settings settings = {}, bool database_through_proxy = false)
      : sim(sim_args),
        proxy(database_through_proxy ? std::make_unique<bankworker::test::tcp_proxy>(
                                           bankworker::test::host_and_port(database.url()).first,
                                           bankworker::test::host_and_port(database.url()).second)
                                     : nullptr),
        connections([&] {
          db::pool_settings pool_config;
          pool_config.connections = 8;
          if (!proxy) return database.worker_pool(std::move(pool_config));
          return std::make_unique<db::pool>(
              crypto::secret::copy_of(bankworker::test::url_through(database.url(), proxy->port())), std::move(pool_config));
        }()),
        keys(bankworker::test::test_key_store()),
        tenant(ledger::create_tenant(*connections, *keys, "plaid tenant", "test")),
        currencies([&] {
          auto lease = connections->checkout();
          pqxx::read_transaction tx(lease.connection());
          return db::load_currencies(tx);
        }()),
        jobs(*connections, queue::queue_settings{}),
        log(bankworker::service::log_level::warn),
        http_client(io, http::client_settings{}),
        api(http_client, currencies, client_settings(sim.url, sync_count), crypto::secret::copy_of(sim_client_id),
            crypto::secret::copy_of(sim_secret)),
        handlers(*connections, *keys, api, metrics, log, settings),
        listen_url(crypto::secret::copy_of(database.url())),
        dispatcher(io, blocking, jobs, &listen_url, dispatcher_settings(), log) {
    dispatcher.add_handler(std::string(plaid::plaid_link_kind), handlers.link_handler());
    dispatcher.add_handler(std::string(plaid::plaid_sync_kind), handlers.sync_handler());
    dispatcher.add_handler(std::string(plaid::plaid_revoke_kind), handlers.revoke_handler());
    asio::co_spawn(dispatcher.executor(), dispatcher.run(), [](std::exception_ptr) {});
    runner = std::thread([this] { io.run(); });
  }

  ~plaid_world() {
    dispatcher.stop();
    runner.join();
    http_client.shutdown();
    blocking.join();
  }

  static plaid::client_settings client_settings(const std::string& url, std::size_t sync_count) {
    plaid::client_settings settings;
    settings.base_url = url;
    settings.sync_count = sync_count;
    settings.request_timeout = 5s;
    return settings;
  }

  static worker::dispatcher_settings dispatcher_settings() {
    worker::dispatcher_settings settings;
    settings.poll_interval = 100ms;
    return settings;
  }

  std::int64_t request(const std::string& sql, const std::string& argument) {
    return db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return tx.exec_params1(sql, tenant.to_string(), argument)[0].as<std::int64_t>();
    });
  }
  std::int64_t link(const std::string& public_token) {
    return request("SELECT bankworker.enqueue_link_request($1::uuid, $2)", public_token);
  }
  std::int64_t request_sync(const uuid& connection) {
    return request("SELECT bankworker.enqueue_sync_request($1::uuid, $2::uuid)", connection.to_string());
  }
  std::int64_t request_revoke(const uuid& connection) {
    return request("SELECT bankworker.enqueue_revoke_request($1::uuid, $2::uuid)", connection.to_string());
  }

  std::optional<job_outcome> job_state(std::int64_t job_id) {
    return db::with_tenant(*connections, tenant, [&](pqxx::work& tx) -> std::optional<job_outcome> {
      const auto rows = tx.exec_params("SELECT state, failure, coalesce(last_error, '') FROM bankworker.job_outcome($1, $2)",
                                       tenant.to_string(), job_id);
      if (rows.empty()) return std::nullopt;
      job_outcome outcome{rows[0][0].as<std::string>(), std::nullopt, rows[0][2].as<std::string>()};
      if (!rows[0][1].is_null()) outcome.failure = rows[0][1].as<std::string>();
      return outcome;
    });
  }

  // Waits until the job is in one of `states`; fails the test after `timeout`.
  job_outcome wait_job(std::int64_t job_id, std::initializer_list<std::string_view> states, std::chrono::seconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::optional<job_outcome> last;
    while (std::chrono::steady_clock::now() < deadline) {
      last = job_state(job_id);
      if (last && std::find(states.begin(), states.end(), last->state) != states.end()) return *last;
      std::this_thread::sleep_for(20ms);
    }
    FAIL("job " << job_id << " is " << (last ? last->state + " (" + last->last_error + ")" : "gone") << " after "
                << timeout.count() << " s");
    return {};
  }

  uuid linked_connection(std::int64_t link_job) {
    const auto outcome = wait_job(link_job, {"succeeded", "failed", "cancelled"});
    INFO("link job: " << outcome.last_error);
    REQUIRE(outcome.state == "succeeded");
    const auto found = db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      return plaid::connection_linked_by_job(tx, tenant, link_job);
    });
    REQUIRE(found);
    return *found;
  }

  std::string admin_text(const std::string& sql, const std::string& argument) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    const auto rows = tx.exec_params(sql, argument);
    return rows.empty() || rows[0][0].is_null() ? std::string() : rows[0][0].as<std::string>();
  }
  long admin_count(const std::string& sql, const std::string& argument) {
    const auto admin = database.connect_as_admin();
    pqxx::work tx(*admin);
    return tx.exec_params1(sql, argument)[0].as<long>();
  }

  std::string status_of(const uuid& connection) {
    return admin_text("SELECT status FROM bankworker.connections WHERE connection_id = $1::uuid", connection.to_string());
  }
  std::string item_of(const uuid& connection) {
    return admin_text("SELECT item_id FROM bankworker.connections WHERE connection_id = $1::uuid", connection.to_string());
  }
  // Waits until no sync of the connection waits or runs, and it has synced at least once.
  void wait_synced(const uuid& connection, std::chrono::seconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const long busy = admin_count(
          "SELECT count(*) FROM bankworker.jobs WHERE connection_id = $1::uuid AND kind = 'plaid.sync'"
          " AND state IN ('available', 'running')",
          connection.to_string());
      const std::string synced = admin_text(
          "SELECT last_synced_at FROM bankworker.connections WHERE connection_id = $1::uuid", connection.to_string());
      if (busy == 0 && !synced.empty()) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL("connection " << connection.to_string() << " did not finish syncing");
  }

  std::vector<expected_row> stored(const uuid& connection) {
    const auto admin = database.connect_as_admin();
    return bankworker::test::stored_rows(*admin, connection.to_string());
  }

  // The stored rows equal the simulator's truth exactly: same ids, amounts, currencies, flags.
  void check_matches_truth(const uuid& connection) {
    const auto expected = sim.truth(sim.access_token_of(item_of(connection)));
    const auto actual = stored(connection);
    REQUIRE(!expected.empty());
    CHECK(actual.size() == expected.size());
    CHECK(actual == expected);
  }

  scratch_database database;
  plaid_simulator sim;
  std::unique_ptr<bankworker::test::tcp_proxy> proxy;
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
  plaid::client api;
  plaid::plaid_jobs handlers;
  crypto::secret listen_url;
  worker::dispatcher dispatcher;
  std::thread runner;
};

}  // namespace

TEST_CASE("a linked item's first sync stores exactly the simulator's transactions, USD to BTC amounts exact",
          "[pg][plaid]") {
  plaid_world world(500);
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  world.check_matches_truth(connection);
  CHECK(world.status_of(connection) == "active");
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.accounts WHERE connection_id = $1::uuid",
                          connection.to_string()) == 6);
  CHECK(world.admin_count("SELECT count(DISTINCT currency) FROM bankworker.transactions WHERE connection_id = $1::uuid",
                          connection.to_string()) == 5);
  // One sealed token, bound to this connection; the call log names every call, no token.
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE purpose = 'plaid.access_token'"
                          " AND subject_id = $1",
                          connection.to_string()) == 1);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.external_calls WHERE endpoint = $1",
                          "/item/public_token/exchange") == 1);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.external_calls WHERE endpoint = $1", "/transactions/sync") >= 1);
  const auto verified = db::verify_audit_chain(*world.connections, *world.keys, world.tenant);
  CHECK_FALSE(verified.broken);

  SECTION("a second sync with nothing new changes nothing and calls Plaid once") {
    const auto before = world.stored(connection);
    const std::size_t calls_before = world.sim.calls("/transactions/sync", world.item_of(connection));
    const auto job = world.request_sync(connection);
    CHECK(world.wait_job(job, {"succeeded", "failed"}).state == "succeeded");
    CHECK(world.stored(connection) == before);
    CHECK(world.sim.calls("/transactions/sync", world.item_of(connection)) == calls_before + 1);
  }
}

TEST_CASE("a mutation on page 2 of 3 restarts the walk from its first cursor: nothing lost, nothing doubled",
          "[pg][plaid]") {
  plaid_world world(15);  // 40 transactions: pages of 15, 15, 10
  world.sim.post("/sim/faults", R"({"endpoint":"/transactions/sync","page":2,"error_code":"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"})");
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  world.check_matches_truth(connection);
  // Page 1, page 2 refused, then pages 1, 2, 3 again.
  CHECK(world.sim.calls("/transactions/sync", world.item_of(connection)) == 5);
}

TEST_CASE("pending to posted across pages leaves the posted row linked and the pending one tombstoned", "[pg][plaid]") {
  for (const bool added_first : {false, true}) {
    plaid_world world(1);
    const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
    world.wait_synced(connection);
    const std::string token = world.sim.access_token_of(world.item_of(connection));
    simdjson::dom::parser parser;
    const std::string added = world.sim.post("/sim/transactions/add",
                                             "{\"access_token\":\"" + token + "\",\"pending\":true,\"amount_minor\":1234}");
    const std::string pending_id(parser.parse(added)["transaction"]["transaction_id"].get_string().value());
    CHECK(world.wait_job(world.request_sync(connection), {"succeeded", "failed"}).state == "succeeded");
    CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE transaction_id = $1 AND pending"
                            " AND removed_at IS NULL AND amount_minor = -1234",
                            pending_id) == 1);

    world.sim.post("/sim/transactions/post", "{\"access_token\":\"" + token + "\",\"transaction_id\":\"" + pending_id +
                                                 "\",\"added_first\":" + (added_first ? "true" : "false") + "}");
    CHECK(world.wait_job(world.request_sync(connection), {"succeeded", "failed"}).state == "succeeded");
    world.check_matches_truth(connection);
    CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE transaction_id = $1"
                            " AND removed_at IS NOT NULL",
                            pending_id) == 1);
    CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE pending_transaction_id = $1"
                            " AND NOT pending AND removed_at IS NULL",
                            pending_id) == 1);
  }
}

TEST_CASE("every Plaid error a sync can meet gets its outcome and its connection state", "[pg][plaid]") {
  plaid::plaid_job_settings settings;
  settings.rate_limited_retry = 60s;  // long enough that the job is still waiting when checked
  plaid_world world(500, {}, settings);
  struct expectation {
    std::string fault;
    std::string job_state;
    std::optional<std::string> failure;
    std::string connection_status;
    std::string error_mentions;
  };
  const std::vector<expectation> cases{
      {R"("error_code":"RATE_LIMIT_EXCEEDED")", "retryable", std::nullopt, "active", "rate_limited"},
      {R"("error_code":"INTERNAL_SERVER_ERROR")", "retryable", std::nullopt, "active", "transient"},
      {R"("error_code":"PLANNED_MAINTENANCE")", "retryable", std::nullopt, "active", "transient"},
      {R"("error_code":"INSTITUTION_DOWN")", "retryable", std::nullopt, "active", "institution_down"},
      {R"("error_code":"INSTITUTION_NOT_RESPONDING")", "retryable", std::nullopt, "active", "institution_down"},
      {R"("error_code":"ITEM_LOGIN_REQUIRED")", "failed", "needs_user_action", "needs_reauth", "ITEM_LOGIN_REQUIRED"},
      {R"("error_code":"ITEM_LOCKED")", "failed", "needs_user_action", "needs_reauth", "ITEM_LOCKED"},
      {R"("error_code":"INVALID_ACCESS_TOKEN")", "failed", "permanent", "broken", "INVALID_ACCESS_TOKEN"},
      {R"("error_code":"ITEM_NOT_FOUND")", "failed", "permanent", "revoked", "ITEM_NOT_FOUND"},
      {R"("error_code":"USER_PERMISSION_REVOKED")", "failed", "permanent", "revoked", "USER_PERMISSION_REVOKED"},
      {R"("body":"malformed")", "failed", "permanent", "active", "response_invalid"},
      {R"("body":"truncated")", "retryable", std::nullopt, "active", "transient"},
      {R"("delay_ms":7000)", "retryable", std::nullopt, "active", "transient"},
      {R"("error_code":"INVALID_API_KEYS")", "retryable", std::nullopt, "active", "invalid_api_keys"},
  };
  for (const expectation& expected : cases) {
    INFO("fault " << expected.fault);
    const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
    world.wait_synced(connection);
    world.sim.post("/sim/faults", "{\"endpoint\":\"/transactions/sync\",\"times\":1000," + expected.fault + "}");
    const auto job = world.request_sync(connection);
    const auto outcome = world.wait_job(job, {expected.job_state});
    CHECK(outcome.failure == expected.failure);
    CHECK(outcome.last_error.find(expected.error_mentions) != std::string::npos);
    if (expected.connection_status == "revoked") {
      // The revocation it asked for runs next, at top priority.
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (world.status_of(connection) != "revoked" && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(20ms);
      }
    }
    CHECK(world.status_of(connection) == expected.connection_status);
    world.sim.post("/sim/faults/clear", "{}");
  }
  CHECK(world.handlers.paused());
}

TEST_CASE("revocation calls /item/remove once, shreds the token, cancels waiting syncs and is idempotent",
          "[pg][plaid]") {
  plaid_world world(500);
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  const std::string item = world.item_of(connection);
  const std::size_t rows = world.stored(connection).size();

  const auto requested_at = std::chrono::steady_clock::now();
  const auto revoke = world.request_revoke(connection);
  CHECK(world.wait_job(revoke, {"succeeded", "failed"}).state == "succeeded");
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - requested_at);
  WARN("request_revoke to shredded: " << took.count() << " ms");
  CHECK(world.status_of(connection) == "revoked");
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE subject_id = $1",
                          connection.to_string()) == 0);
  CHECK(world.sim.calls("/item/remove", item) == 1);
  CHECK(world.stored(connection).size() == rows);  // the tenant's books stay
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE subject = $1 AND action = 'connection.revoked'",
                          connection.to_string()) == 1);

  // Asking again does nothing more, and a revoked connection cannot be synced.
  const auto again = world.request_revoke(connection);
  CHECK(world.wait_job(again, {"succeeded", "failed"}).state == "succeeded");
  CHECK(world.sim.calls("/item/remove", item) == 1);
  CHECK_THROWS(world.request_sync(connection));
}

TEST_CASE("revocation when Plaid already forgot the item still shreds the token", "[pg][plaid]") {
  plaid_world world(500);
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  const std::string token = world.sim.access_token_of(world.item_of(connection));
  world.sim.post("/item/remove", "{\"client_id\":\"" + std::string(sim_client_id) + "\",\"secret\":\"" + sim_secret +
                                     "\",\"access_token\":\"" + token + "\"}");
  const auto revoke = world.request_revoke(connection);
  CHECK(world.wait_job(revoke, {"succeeded", "failed"}).state == "succeeded");
  CHECK(world.status_of(connection) == "revoked");
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE subject_id = $1",
                          connection.to_string()) == 0);
}

TEST_CASE("a link whose store finds the database unreachable waits for it and keeps the item, the token being spent",
          "[pg][plaid]") {
  plaid::plaid_job_settings settings;
  settings.link_store_retry_delay = 300ms;
  plaid_world world(500, {}, settings, true);
  // The exchange takes 1.5 s; the database goes away while it is in flight and comes back 1.5 s
  // after, so the first store meets a broken connection.
  world.sim.post("/sim/faults", R"({"endpoint":"/item/public_token/exchange","delay_ms":1500})");
  const auto job = world.link(world.sim.public_token());
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (world.admin_count("SELECT count(*) FROM bankworker.jobs WHERE job_id = $1 AND state = 'running'",
                           std::to_string(job)) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(300ms);
  world.proxy->set_down(true);
  std::this_thread::sleep_for(2500ms);
  world.proxy->set_down(false);
  // Read back as the admin, directly: the test's own pooled connections were cut too.
  const auto finished = std::chrono::steady_clock::now() + 30s;
  std::string state;
  while (std::chrono::steady_clock::now() < finished) {
    state = world.admin_text("SELECT state FROM bankworker.jobs WHERE job_id = $1", std::to_string(job));
    if (state == "succeeded" || state == "failed") break;
    std::this_thread::sleep_for(20ms);
  }
  INFO("last error: " << world.admin_text("SELECT last_error FROM bankworker.jobs WHERE job_id = $1", std::to_string(job)));
  REQUIRE(state == "succeeded");
  const std::string connection =
      world.admin_text("SELECT connection_id FROM bankworker.connections WHERE linked_by_job = $1", std::to_string(job));
  REQUIRE(!connection.empty());
  const std::string item = world.admin_text("SELECT item_id FROM bankworker.connections WHERE connection_id = $1::uuid", connection);
  CHECK(world.admin_text("SELECT status FROM bankworker.connections WHERE connection_id = $1::uuid", connection) == "active");
  CHECK(world.sim.calls("/item/remove", item) == 0);
  CHECK(world.sim.calls("/item/public_token/exchange", item) == 1);
}

TEST_CASE("a revocation during a running sync stops it before its commit", "[pg][plaid]") {
  plaid_world world(10);
  // Every page takes 400 ms: the first sync is still walking when the revocation arrives.
  world.sim.post("/sim/faults", R"({"endpoint":"/transactions/sync","delay_ms":400,"times":100})");
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (world.admin_count("SELECT count(*) FROM bankworker.jobs WHERE connection_id = $1::uuid AND kind = 'plaid.sync'"
                           " AND state = 'running'",
                           connection.to_string()) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  const auto revoke = world.request_revoke(connection);
  CHECK(world.wait_job(revoke, {"succeeded", "failed"}).state == "succeeded");
  CHECK(world.status_of(connection) == "revoked");
  // Let the sync reach its commit and find the connection revoked.
  const auto settled = std::chrono::steady_clock::now() + 20s;
  while (world.admin_count("SELECT count(*) FROM bankworker.jobs WHERE connection_id = $1::uuid AND kind = 'plaid.sync'"
                           " AND state IN ('running', 'available')",
                           connection.to_string()) > 0 &&
         std::chrono::steady_clock::now() < settled) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(world.stored(connection).empty());
  CHECK(world.admin_text("SELECT coalesce(sync_cursor, '') FROM bankworker.connections WHERE connection_id = $1::uuid",
                         connection.to_string())
            .empty());
}

TEST_CASE("a transaction in an undeclared currency is quarantined, the rest of its page applies, and it applies once"
          " the currency is declared", "[pg][plaid][quarantine]") {
  plaid_world world(500);
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  const std::string token = world.sim.access_token_of(world.item_of(connection));
  simdjson::dom::parser parser;
  const auto add = [&](const std::string& fields) {
    const std::string added = world.sim.post("/sim/transactions/add", "{\"access_token\":\"" + token + "\"," + fields + "}");
    return std::string(parser.parse(added)["transaction"]["transaction_id"].get_string().value());
  };
  const std::string odd = add(R"("unofficial_currency_code":"QQQ","amount_minor":1234)");
  const std::string gone_later = add(R"("unofficial_currency_code":"QQQ","amount_minor":99)");
  const std::string usd = add(R"("amount_minor":500)");
  const auto quarantined = [&] {
    return world.admin_count("SELECT count(*) FROM bankworker.plaid_quarantine WHERE connection_id = $1::uuid"
                             " AND reason = 'unknown_currency' AND currency = 'QQQ'",
                             connection.to_string());
  };
  const auto listed_quarantined = [&] {
    return db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
      for (const auto& row : plaid::list_connections(tx, world.tenant)) {
        if (row.connection == connection) return row.quarantined;
      }
      return std::int64_t{-1};
    });
  };

  // The sync succeeds: the USD row (and everything before) is stored, the cursor moves, the two
  // QQQ rows wait in the quarantine, raw, and connections list counts them.
  const auto first = world.wait_job(world.request_sync(connection), {"succeeded", "failed", "retryable"});
  INFO(first.last_error);
  REQUIRE(first.state == "succeeded");
  auto expected = world.sim.truth(token);
  std::erase_if(expected, [&](const expected_row& row) { return row.currency == "QQQ"; });
  CHECK(world.stored(connection) == expected);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE transaction_id = $1", usd) == 1);
  CHECK(quarantined() == 2);
  CHECK(listed_quarantined() == 2);
  CHECK(world.admin_text("SELECT raw FROM bankworker.plaid_quarantine WHERE plaid_id = $1", odd).find("\"QQQ\"") !=
        std::string::npos);

  // Plaid removes one of them: its quarantined copy goes too (nothing would ever apply it).
  world.sim.post("/sim/transactions/remove", "{\"access_token\":\"" + token + "\",\"transaction_id\":\"" + gone_later + "\"}");
  REQUIRE(world.wait_job(world.request_sync(connection), {"succeeded", "failed"}).state == "succeeded");
  CHECK(quarantined() == 1);

  // Declaring the currency (what `bankworker currencies add QQQ --exponent 2` does) requests the
  // connection's sync by itself; its apply stores the row, exactly as the simulator holds it.
  const db::currency_declared declared = db::declare_currency(*world.connections, *world.keys, "QQQ", 2, "test");
  CHECK(declared.declared);
  CHECK(declared.syncs_requested == 1);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (quarantined() > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  CHECK(quarantined() == 0);
  CHECK(listed_quarantined() == 0);
  world.wait_synced(connection);
  world.check_matches_truth(connection);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE transaction_id = $1 AND currency = 'QQQ'"
                          " AND amount_minor = -1234",
                          odd) == 1);
  // This worker read its currency table before QQQ was declared: a new QQQ row is stored at once
  // all the same (the apply reads the table again), not quarantined until the next sync.
  const std::string later = add(R"("unofficial_currency_code":"QQQ","amount_minor":-4200)");
  REQUIRE(world.wait_job(world.request_sync(connection), {"succeeded", "failed"}).state == "succeeded");
  CHECK(quarantined() == 0);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.transactions WHERE transaction_id = $1 AND amount_minor = 4200",
                          later) == 1);
  world.check_matches_truth(connection);
  // The declaration is in the tenant's chain, which still verifies.
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE action = $1", "currency.declared") == 1);
  CHECK_FALSE(db::verify_audit_chain(*world.connections, *world.keys, world.tenant).broken);

  // Declaring it again is a no-op; another exponent is refused (amounts stored under it would change value).
  CHECK_FALSE(db::declare_currency(*world.connections, *world.keys, "QQQ", 2, "test").declared);
  CHECK_THROWS_AS(db::declare_currency(*world.connections, *world.keys, "QQQ", 3, "test"), pqxx::unique_violation);
  CHECK_THROWS_AS(db::declare_currency(*world.connections, *world.keys, "qq", 2, "test"), pqxx::sql_error);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.audit_log WHERE action = $1", "currency.declared") == 1);
}

TEST_CASE("the database itself refuses a bank transaction in an undeclared currency, and keeps declared ones",
          "[pg][plaid]") {
  const scratch_database database;
  const auto admin = database.connect_as_admin();
  const std::string tenant = "aaaaaaaa-0000-4000-8000-00000000000c";
  const std::string connection = "cccccccc-0000-4000-8000-00000000000c";
  const std::string insert_sql =
      "INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
      " currency, date, name, pending) VALUES ($1, $2, 'acc', $3, -100, $4, '2026-10-01', 'x', false)";
  {
    pqxx::work tx(*admin);
    tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 't')", tenant);
    tx.exec_params("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
                   " VALUES ($1, $2, 'sandbox', 'active')",
                   tenant, connection);
    tx.exec_params(insert_sql, tenant, "t-usd", connection, "USD");
    tx.exec_params(insert_sql, tenant, "t-btc", connection, "BTC");
    tx.commit();
  }
  {
    pqxx::work tx(*admin);
    CHECK_THROWS_AS(tx.exec_params(insert_sql, tenant, "t-xyz", connection, "XYZ"), pqxx::foreign_key_violation);
  }
  {
    pqxx::work tx(*admin);
    CHECK_THROWS_AS(tx.exec("UPDATE bankworker.transactions SET currency = 'ZZZ' WHERE transaction_id = 't-usd'"),
                    pqxx::foreign_key_violation);
  }
  {
    pqxx::work tx(*admin);
    CHECK_THROWS(tx.exec("DELETE FROM bankworker.currencies WHERE code = 'BTC'"));
  }
  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.transactions")[0].as<int>() == 2);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.currencies WHERE code = 'BTC'")[0].as<int>() == 1);
}

TEST_CASE("the database itself refuses a bank transaction whose connection it cannot see, and keeps connections",
          "[pg][plaid]") {
  const scratch_database database;
  const auto admin = database.connect_as_admin();
  const std::string tenant_a = "aaaaaaaa-0000-4000-8000-00000000000d";
  const std::string tenant_b = "bbbbbbbb-0000-4000-8000-00000000000d";
  const std::string connection_a = "cccccccc-0000-4000-8000-00000000000d";
  const std::string connection_b = "dddddddd-0000-4000-8000-00000000000d";
  {
    pqxx::work tx(*admin);
    for (const auto& [tenant, connection] : {std::pair{tenant_a, connection_a}, std::pair{tenant_b, connection_b}}) {
      tx.exec_params("INSERT INTO bankworker.tenants (tenant_id, name) VALUES ($1, 't')", tenant);
      tx.exec_params("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
                     " VALUES ($1, $2, 'sandbox', 'active')",
                     tenant, connection);
    }
    tx.commit();
  }
  // As the runtime role under tenant A, the way the worker writes: its own connection is accepted;
  // tenant B's connection, or one that does not exist, is refused by the database.
  pqxx::connection worker(database.url());
  const auto as_a = [&](const std::string& sql, const auto&... params) {
    pqxx::work tx(worker);
    tx.exec("SET LOCAL ROLE bankworker_worker");
    tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, true)", tenant_a);
    const pqxx::result result = tx.exec_params(sql, params...);
    tx.commit();
    return result.affected_rows();
  };
  const std::string insert_sql =
      "INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
      " currency, date, name, pending) SELECT $1, 't-' || g, 'acc', $2, -100, 'USD', '2026-10-01', 'x', false"
      " FROM generate_series(1, $3) g";
  CHECK(as_a(insert_sql, tenant_a, connection_a, 3) == 3);
  CHECK_THROWS_AS(as_a(insert_sql + " ON CONFLICT DO NOTHING", tenant_a, connection_b, 5), pqxx::foreign_key_violation);
  CHECK_THROWS_AS(as_a(insert_sql + " ON CONFLICT DO NOTHING", tenant_a, "eeeeeeee-0000-4000-8000-00000000000d", 5),
                  pqxx::foreign_key_violation);
  CHECK_THROWS_AS(as_a("UPDATE bankworker.transactions SET connection_id = $1 WHERE tenant_id = $2", connection_b,
                       tenant_a),
                  pqxx::foreign_key_violation);

  // A connection is never deleted and its id never changes; its other columns do.
  CHECK_THROWS_AS(as_a("DELETE FROM bankworker.connections WHERE connection_id = $1", connection_a),
                  pqxx::insufficient_privilege);
  CHECK_THROWS_AS(as_a("UPDATE bankworker.connections SET connection_id = $1 WHERE connection_id = $2",
                       "eeeeeeee-0000-4000-8000-00000000000d", connection_a),
                  pqxx::insufficient_privilege);
  CHECK(as_a("UPDATE bankworker.connections SET status = 'revoked' WHERE connection_id = $1", connection_a) == 1);
  {
    pqxx::work tx(*admin);
    CHECK_THROWS(tx.exec("DELETE FROM bankworker.connections"));
  }

  pqxx::work tx(*admin);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.transactions")[0].as<int>() == 3);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.transactions WHERE connection_id = '" + connection_a + "'")[0]
            .as<int>() == 3);
  CHECK(tx.exec1("SELECT count(*) FROM bankworker.connections")[0].as<int>() == 2);
}

TEST_CASE("a revocation Plaid refuses stays revoking with its token intact, visible, until Plaid accepts",
          "[pg][plaid][revoke]") {
  plaid_world world(500);
  const uuid connection = world.linked_connection(world.link(world.sim.public_token()));
  world.wait_synced(connection);
  const std::string item = world.item_of(connection);
  const std::string token = world.sim.access_token_of(item);
  // Plaid refuses every removal (the item needs the user's login again) until the fault is cleared.
  world.sim.post("/sim/faults", "{\"endpoint\":\"/item/remove\",\"times\":1000,\"error_code\":\"ITEM_LOGIN_REQUIRED\"}");
  const auto revoke = world.request_revoke(connection);

  // Retried with backoff: a second call comes, and the first refusal was recorded before it.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (world.sim.calls("/item/remove", item) < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(world.sim.calls("/item/remove", item) >= 2);
  {
    CHECK(world.status_of(connection) == "revoking");
    CHECK(world.job_state(revoke)->state != "succeeded");
    const auto summary = db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
      for (const auto& row : plaid::list_connections(tx, world.tenant)) {
        if (row.connection == connection) return row;
      }
      return plaid::connection_summary{};
    });
    CHECK(plaid::to_string(summary.status) == "revoking");
    CHECK(summary.revoking_since.has_value());
    CHECK_THAT(summary.last_error.value_or(""), Catch::Contains("ITEM_LOGIN_REQUIRED"));
    CHECK_THAT(summary.last_error.value_or(""), !Catch::Contains(token));
    const auto [revoking, oldest_s] = db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
      const auto row = tx.exec1("SELECT connections, oldest_s FROM bankworker.revoking_connections(NULL)");
      return std::pair{row[0].as<long>(), row[1].as<long>()};
    });
    CHECK(revoking == 1);
    CHECK(oldest_s >= 0);
  }
  const auto opened = db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
    const auto row = plaid::load_plaid_connection(tx, world.tenant, connection, false);
    REQUIRE(row);
    REQUIRE(row->token_secret);
    return std::string(world.keys
                           ->open_secret(tx, {.purpose = crypto::secret_purpose::plaid_access_token,
                                              .tenant = world.tenant,
                                              .secret_id = *row->token_secret,
                                              .subject_id = connection.to_string(),
                                              .environment = row->environment})
                           .reveal()
                           .text());
  });
  CHECK(opened == token);  // not shredded while Plaid still honours it
  // A copy of the sealed row taken now, while the revocation waits (a backup).
  const std::string secret_id = world.admin_text(
      "SELECT secret_id::text FROM bankworker.sealed_secrets WHERE subject_id = $1", connection.to_string());
  {
    const auto admin = world.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec_params0("CREATE TABLE public.backup_sealed AS SELECT * FROM bankworker.sealed_secrets WHERE secret_id = $1",
                    secret_id);
    tx.commit();
  }

  // Plaid accepts the next call: only then is the token destroyed.
  const std::size_t refused = world.sim.calls("/item/remove", item);
  world.sim.post("/sim/faults/clear", "{}");
  const auto outcome = world.wait_job(revoke, {"succeeded", "failed"}, 60s);
  INFO(outcome.last_error);
  CHECK(outcome.state == "succeeded");
  CHECK(world.sim.calls("/item/remove", item) >= refused + 1);
  CHECK(world.status_of(connection) == "revoked");
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.sealed_secrets WHERE subject_id = $1",
                          connection.to_string()) == 0);
  CHECK(world.admin_count("SELECT count(*) FROM bankworker.connections WHERE revoking_since IS NOT NULL"
                          " AND connection_id::text = $1",
                          connection.to_string()) == 0);

  // The copy, restored, opens through none of the worker's paths.
  {
    const auto admin = world.database.connect_as_admin();
    pqxx::work tx(*admin);
    tx.exec0("INSERT INTO bankworker.sealed_secrets SELECT * FROM public.backup_sealed");
    tx.commit();
  }
  CHECK_THROWS_AS(db::with_tenant(*world.connections, world.tenant, [&](pqxx::work& tx) {
                    return world.keys->open_secret(tx, {.purpose = crypto::secret_purpose::plaid_access_token,
                                                        .tenant = world.tenant,
                                                        .secret_id = *uuid::parse(secret_id),
                                                        .subject_id = connection.to_string(),
                                                        .environment = "sandbox"});
                  }),
                  crypto::envelope_error);
}
