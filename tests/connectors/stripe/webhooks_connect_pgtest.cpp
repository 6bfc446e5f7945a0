// The Stripe Connect platform endpoint (POST /webhooks/stripe) and `bankworker stripe connect`:
// routing by the event's account as the runtime role, unrouted events kept and moved, nothing
// dropped or doubled. The real binary, the real database, the Stripe simulator over loopback.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include <pqxx/pqxx>

#include "db/tenant_scope.hpp"
#include "ledger/tenants.hpp"
#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

constexpr const char* platform_secret = "whsec_connect_test_platform_secret";
constexpr const char* tenant_secret = "whsec_connect_test_tenant_a_secret";

using test::count;
using test::eventually;

std::string write_secret_file(const test::root_key_file& key, const std::string& name, const std::string& secret) {
  const std::string path = key.path().parent_path().string() + "/" + name;
  {
    std::ofstream(path) << secret << "\n";
  }
  ::chmod(path.c_str(), 0600);
  return path;
}

std::string without_newline(const std::string& text) {
  return !text.empty() && text.back() == '\n' ? text.substr(0, text.size() - 1) : text;
}

}  // namespace

TEST_CASE("as the runtime role, a Connect account routes to its tenant from any scope, and only routing sees across",
          "[pg][stripe][rls]") {
  test::scratch_database database;
  auto connections = database.worker_pool();
  const auto tenant_a = ledger::create_tenant(*connections, *test::test_key_store(), "Connect A");
  const auto tenant_b = ledger::create_tenant(*connections, *test::test_key_store(), "Connect B");
  db::with_tenant(*connections, tenant_a, [](pqxx::work& tx) {
    tx.exec0("INSERT INTO bankworker.stripe_accounts (tenant_id, account)"
             " VALUES (current_setting('bankworker.tenant_id')::uuid, 'acct_routeA1')");
  });
  const std::string lookup = "SELECT bankworker.stripe_account_tenant('acct_routeA1')::text";

  // From the other tenant's scope: the mapping is found, yet B still cannot read A's row.
  db::with_tenant(*connections, tenant_b, [&](pqxx::work& tx) {
    CHECK(tx.exec1(lookup)[0].as<std::string>() == tenant_a.to_string());
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.stripe_accounts")[0].as<int>() == 0);
    CHECK(tx.exec1("SELECT coalesce(current_setting('bankworker.cross_tenant', true), '')")[0].as<std::string>() != "on");
    // Turning the setting on itself gives the runtime role nothing: the policy names the owner.
    tx.exec("SELECT set_config('bankworker.cross_tenant', 'on', true)");
    CHECK(tx.exec1("SELECT count(*) FROM bankworker.stripe_accounts")[0].as<int>() == 0);
  });
  // With no tenant set at all, as the inbox's committer routes.
  {
    auto lease = connections->checkout();
    pqxx::work tx(lease.connection());
    CHECK(tx.exec1(lookup)[0].as<std::string>() == tenant_a.to_string());
    CHECK(tx.exec1("SELECT bankworker.stripe_account_tenant('acct_nobody1') IS NULL")[0].as<bool>());
    const auto routed = tx.exec(
        "SELECT account, tenant_id::text FROM bankworker.route_stripe_accounts(ARRAY['acct_routeA1', 'acct_nobody1',"
        " 'acct_routeA1', NULL]) ORDER BY account");
    REQUIRE(routed.size() == 2);
    CHECK(routed[0][0].as<std::string>() == "acct_nobody1");
    CHECK(routed[0][1].is_null());
    CHECK(routed[1][1].as<std::string>() == tenant_a.to_string());
  }
}

TEST_CASE("the platform endpoint routes mapped accounts, keeps unmapped ones, and stripe connect moves them in once",
          "[pg][stripe][run][e2e]") {
  const test::scratch_database database;
  const test::root_key_file key;
  const std::uint16_t port = test::free_loopback_port();
  const std::uint16_t admin_port = test::free_loopback_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);
  const std::string platform_hook = base + "/webhooks/stripe";
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                            {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                            {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                            {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "warn"}};
  const auto created_a = test::run_bankworker({"tenant", "create", "--name", "Connect A"}, env);
  const auto created_b = test::run_bankworker({"tenant", "create", "--name", "Connect B"}, env);
  REQUIRE(created_a.exit_code == 0);
  REQUIRE(created_b.exit_code == 0);
  const std::string tenant_a = without_newline(created_a.out);
  const std::string tenant_b = without_newline(created_b.out);
  REQUIRE(test::run_bankworker({"stripe", "secret", "add", "--tenant", tenant_a, "--secret-file",
                                write_secret_file(key, "tenant-whsec", tenant_secret)},
                               env)
              .exit_code == 0);
  const auto connected_a = test::run_bankworker({"stripe", "connect", "--tenant", tenant_a, "--account", "acct_mappedA1"}, env);
  REQUIRE(connected_a.exit_code == 0);
  CHECK_THAT(connected_a.out, Catch::Contains("0 unrouted event(s) moved"));

  env["BANKWORKER_STRIPE_PLATFORM_SECRET_FILE"] = write_secret_file(key, "platform-whsec", platform_secret);
  test::child_process worker(BANKWORKER_BINARY, {"run"}, env);
  REQUIRE(eventually([&] { return test::http_get(admin_base + "/healthz").status == 200; }));

  test::child_process stripe(STRIPE_SIM_BINARY, {"--port", "0"}, {});
  const std::string sim = test::base_url_from(stripe);
  const auto trigger = [&](std::string_view kind, std::string_view account, std::string_view mode,
                           std::string_view secret) {
    return test::http_post(sim + "/sim/trigger", "{\"kind\":\"" + std::string(kind) + "\",\"account\":\"" +
                                                     std::string(account) + "\",\"mode\":\"" + std::string(mode) +
                                                     "\",\"secret\":\"" + std::string(secret) +
                                                     "\",\"deliver_to\":\"" + platform_hook + "\"}")
        .body;
  };
  const auto admin = database.connect_as_admin();
  const std::string events_of_a = "SELECT count(*) FROM bankworker.stripe_events WHERE tenant_id = '" + tenant_a + "'";
  const std::string events_of_b = "SELECT count(*) FROM bankworker.stripe_events WHERE tenant_id = '" + tenant_b + "'";
  const std::string unrouted_later =
      "SELECT count(*) FROM bankworker.stripe_unrouted_events WHERE account = 'acct_laterB1'";

  // A mapped account: into tenant A's inbox, then posted.
  CHECK_THAT(trigger("payment", "acct_mappedA1", "valid", platform_secret), Catch::Contains("\"statuses\":[200,200]"));
  CHECK(count(*admin, events_of_a) == 2);
  REQUIRE(eventually([&] { return count(*admin, events_of_a + " AND state = 'posted'") == 2; }));

  // An unmapped account, every event delivered twice: acknowledged, kept once each, in no tenant.
  CHECK_THAT(trigger("payment", "acct_laterB1", "duplicate", platform_secret),
             Catch::Contains("\"statuses\":[200,200,200,200]"));
  CHECK(count(*admin, unrouted_later) == 2);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.stripe_events WHERE account = 'acct_laterB1'") == 0);
  // The platform's own events carry no account: kept too.
  CHECK_THAT(trigger("payout", "", "valid", platform_secret), Catch::Contains("\"statuses\":[200]"));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.stripe_unrouted_events WHERE account IS NULL") == 1);

  // Signed with a tenant endpoint's secret, stale, too large: refused, nothing stored.
  const long all_before = count(*admin, "SELECT (SELECT count(*) FROM bankworker.stripe_events) +"
                                        " (SELECT count(*) FROM bankworker.stripe_unrouted_events)");
  CHECK_THAT(trigger("payment", "acct_mappedA1", "valid", tenant_secret), Catch::Contains("\"statuses\":[400,400]"));
  CHECK_THAT(trigger("payment", "acct_laterB1", "stale", platform_secret), Catch::Contains("\"statuses\":[400,400]"));
  CHECK(test::http_post(platform_hook, "{}").status == 400);
  CHECK(test::http_post(platform_hook, std::string((1 << 20) + 1, 'x')).status == 413);
  CHECK(count(*admin, "SELECT (SELECT count(*) FROM bankworker.stripe_events) +"
                      " (SELECT count(*) FROM bankworker.stripe_unrouted_events)") == all_before);

  // Connecting the account moves its events into tenant B's inbox; the running worker posts them.
  const auto connected_b = test::run_bankworker({"stripe", "connect", "--tenant", tenant_b, "--account", "acct_laterB1"}, env);
  INFO(connected_b.err);
  REQUIRE(connected_b.exit_code == 0);
  CHECK_THAT(connected_b.out, Catch::Contains("2 unrouted event(s) moved"));
  CHECK(count(*admin, unrouted_later) == 0);
  CHECK(count(*admin, events_of_b) == 2);
  REQUIRE(eventually([&] { return count(*admin, events_of_b + " AND state = 'posted'") == 2; }));
  // The posters took them from the inbox: no job row per event (issue #21).
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.jobs WHERE kind = 'stripe.post' AND tenant_id = '" + tenant_b +
                          "'") == 0);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.journal_entries WHERE tenant_id = '" + tenant_b + "'") == 1);
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.audit_log WHERE tenant_id = '" + tenant_b +
                          "' AND action = 'stripe.account_connected'") == 1);

  // A late redelivery of a moved event now routes to B and is a duplicate there.
  std::string moved_body;
  {
    pqxx::work tx(*admin);
    moved_body = tx.exec1("SELECT body::text FROM bankworker.stripe_events WHERE tenant_id = '" + tenant_b +
                          "' ORDER BY event_id LIMIT 1")[0]
                     .as<std::string>();
  }
  const auto redelivered = test::http_post(
      platform_hook, moved_body,
      {"Content-Type: application/json",
       "Stripe-Signature: " + sim::stripe::simulator::sign(moved_body, platform_secret, std::time(nullptr))});
  CHECK(redelivered.status == 200);
  CHECK_THAT(redelivered.body, Catch::Contains("duplicate"));
  CHECK(count(*admin, events_of_b) == 2);

  // Re-running for the same tenant changes nothing; another tenant's claim is refused.
  const auto again = test::run_bankworker({"stripe", "connect", "--tenant", tenant_b, "--account", "acct_laterB1"}, env);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("already connected"));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.audit_log WHERE tenant_id = '" + tenant_b +
                          "' AND action = 'stripe.account_connected'") == 1);
  const auto stolen = test::run_bankworker({"stripe", "connect", "--tenant", tenant_a, "--account", "acct_laterB1"}, env);
  CHECK(stolen.exit_code == 1);
  CHECK_THAT(stolen.err, Catch::Contains("already connected to another tenant"));
  CHECK(count(*admin, "SELECT count(*) FROM bankworker.stripe_accounts WHERE account = 'acct_laterB1' AND tenant_id = '" +
                          tenant_b + "'") == 1);
  CHECK(test::run_bankworker({"stripe", "connect", "--tenant", tenant_a, "--account", "acct_bad-id"}, env).exit_code == 2);

  const std::string metrics = test::http_get(admin_base + "/metrics").body;
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"stored\"} 2"));
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"unrouted\"} 3"));
  CHECK_THAT(metrics, Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"duplicate\"} 3"));

  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(20)) == 0);
}
