// The attack matrix (issue #8): each attack against a real `bankworker run` over loopback is
// refused with its status, stores nothing, and a legitimate delivery from another client is still
// stored while (or right after) the attack happens.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <thread>

#include <pqxx/pqxx>

#include "tests/sim/stripe/simulator.hpp"
#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/plaid_sim.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_http.hpp"
#include "tests/support/scope_token.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

using test::count;
using test::eventually;
using test::metric_value;

constexpr const char* secret_a = "whsec_attack_matrix_tenant_a";
constexpr const char* secret_b = "whsec_attack_matrix_tenant_b";

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A worker with two tenants (A under attack, B the legitimate client), each with its own Stripe
// endpoint secret, and Plaid configured against the simulator so /webhooks/plaid is live.
struct attack_target {
  test::scratch_database database;
  test::root_key_file key;
  test::plaid_simulator plaid;
  std::uint16_t port = test::free_loopback_port();
  std::uint16_t admin_port = test::free_loopback_port();
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  std::string admin_base = "http://127.0.0.1:" + std::to_string(admin_port);  // health, readiness, metrics
  std::map<std::string, std::string> env;
  std::string tenant_a;
  std::string tenant_b;
  std::unique_ptr<pqxx::connection> admin = database.connect_as_admin();
  sim::stripe::simulator stripe{8};
  std::unique_ptr<test::child_process> worker;
  long legitimate_events = 0;  // events B delivered and the worker acknowledged

  attack_target() {
    env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
           {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
           {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
           {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
           {"BANKWORKER_PLAID_BASE_URL", plaid.url},
           {"BANKWORKER_PLAID_CLIENT_ID", test::sim_client_id},
           {"BANKWORKER_PLAID_SECRET", test::sim_secret},
           {"BANKWORKER_DRAIN_TIMEOUT", "5"},
           {"BANKWORKER_LOG_LEVEL", "error"}};
    tenant_a = create_tenant("Target Ltd", secret_a);
    tenant_b = create_tenant("Bystander Ltd", secret_b);
    worker = std::make_unique<test::child_process>(BANKWORKER_BINARY, std::vector<std::string>{"run"}, env);
    REQUIRE(eventually([&] { return test::http_get(admin_base + "/readyz").status == 200; }));
  }
  ~attack_target() {
    worker->signal(SIGTERM);
    worker->wait(std::chrono::seconds(20));
  }

  std::string create_tenant(const std::string& name, const std::string& secret) {
    const auto created = test::run_bankworker({"tenant", "create", "--name", name}, env);
    REQUIRE(created.exit_code == 0);
    const std::string tenant = created.out.substr(0, created.out.size() - 1);
    const std::string path = key.path().parent_path().string() + "/" + tenant + ".whsec";
    std::ofstream(path) << secret << "\n";
    ::chmod(path.c_str(), 0600);
    REQUIRE(test::run_bankworker({"stripe", "secret", "add", "--tenant", tenant, "--secret-file", path}, env).exit_code ==
            0);
    return tenant;
  }

  std::string hook(const std::string& tenant) const { return base + "/webhooks/stripe/" + tenant; }

  long status_of_delivery(const std::string& url, const std::string& body, const std::string& signature) const {
    return test::http_post(url, body, {"Content-Type: application/json", "Stripe-Signature: " + signature}).status;
  }

  // Everything an accepted webhook would have left behind.
  long stored_rows() const {
    return count(*admin, "SELECT count(*) FROM bankworker.stripe_events") +
           count(*admin, "SELECT count(*) FROM bankworker.jobs");
  }
  long events_of(const std::string& tenant) const {
    return count(*admin, "SELECT count(*) FROM bankworker.stripe_events WHERE tenant_id = '" + tenant + "'");
  }

  // B's own, freshly signed event: acknowledged and stored, whatever A's attacker is doing.
  void legitimate_delivery_is_stored() {
    const auto deliveries = stripe.trigger({}, sim::stripe::delivery_mode::valid, secret_b, now_s());
    REQUIRE(!deliveries.empty());
    CHECK(status_of_delivery(hook(tenant_b), deliveries.front().body, deliveries.front().signature_header) == 200);
    ++legitimate_events;
    CHECK(events_of(tenant_b) == legitimate_events);
  }

  // A's own event, for attacks that replay or re-sign a real one.
  sim::stripe::delivery event_for_a() {
    const auto deliveries = stripe.trigger({}, sim::stripe::delivery_mode::valid, secret_a, now_s());
    REQUIRE(!deliveries.empty());
    return deliveries.front();
  }

  std::string metrics() const { return test::http_get(admin_base + "/metrics").body; }
};

// Raises this process's open-file soft limit to `wanted` (children inherit it); false when the
// hard limit is lower.
bool raise_open_files(rlim_t wanted) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_cur >= wanted) return true;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < wanted) return false;
  limit.rlim_cur = wanted;
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

}  // namespace

TEST_CASE("attack matrix: forged, cross-tenant, replayed, oversized and malformed Stripe deliveries store nothing",
          "[pg][attack]") {
  attack_target target;
  const long before = target.stored_rows();
  const std::string hook_a = target.hook(target.tenant_a);

  SECTION("a forged signature is 400") {
    const auto forged = target.stripe.trigger({}, sim::stripe::delivery_mode::forged, secret_a, now_s());
    for (const auto& d : forged) CHECK(target.status_of_delivery(hook_a, d.body, d.signature_header) == 400);
  }
  SECTION("a signature made with another tenant's secret is 400 at this tenant's endpoint") {
    const auto event = target.event_for_a();
    CHECK(target.status_of_delivery(hook_a, event.body, sim::stripe::simulator::sign(event.body, secret_b, now_s())) ==
          400);
  }
  SECTION("a valid event replayed after the 300 s tolerance is 400") {
    const auto event = target.event_for_a();
    const std::string captured = sim::stripe::simulator::sign(event.body, secret_a, now_s() - 301);
    CHECK(target.status_of_delivery(hook_a, event.body, captured) == 400);
    CHECK_THAT(target.metrics(),
               Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"stale\"} 1"));
  }
  SECTION("a body over 1 MiB is 413, whether declared or sent") {
    const std::string big((1 << 20) + 1, '{');
    CHECK(target.status_of_delivery(hook_a, big, sim::stripe::simulator::sign(big, secret_a, now_s())) == 413);
    const test::raw_connection declared(target.port);
    declared.send("POST /webhooks/stripe/" + target.tenant_a +
                  " HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n");
    CHECK(test::status_of(declared.read_response()) == 413);
    CHECK_THAT(target.metrics(),
               Catch::Contains("bankworker_webhook_requests_total{provider=\"stripe\",outcome=\"too_large\"} 2"));
  }
  SECTION("a Transfer-Encoding other than chunked is 400 and its body, a signed event, is never served") {
    // The body is a whole second request: A's own event, validly signed. Served as a request of its
    // own, it would be stored; framed as nothing, it must be dropped with the connection.
    const auto event = target.event_for_a();
    const std::string smuggled = "POST /webhooks/stripe/" + target.tenant_a +
                                 " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nStripe-Signature: " +
                                 sim::stripe::simulator::sign(event.body, secret_a, now_s()) +
                                 "\r\nContent-Length: " + std::to_string(event.body.size()) + "\r\n\r\n" + event.body;
    for (const char* coding : {"gzip", "chunked, chunked", "identity"}) {
      INFO(coding);
      const test::raw_connection c(target.port);
      c.send("POST /webhooks/stripe/" + target.tenant_a + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + std::string(coding) +
             "\r\n\r\n" + smuggled);
      CHECK(test::status_of(c.read_response()) == 400);
      CHECK(c.read_response(1'000).empty());  // no second answer
      CHECK(c.closed_within(1'000));
    }
  }
  SECTION("a 413 reaches a client still sending its 8 MiB body, instead of a reset") {
    const std::string body(8 << 20, '{');
    const test::raw_connection c(target.port);
    c.send("POST /webhooks/stripe/" + target.tenant_a + " HTTP/1.1\r\nHost: x\r\nStripe-Signature: " +
           sim::stripe::simulator::sign(body, secret_a, now_s()) + "\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n");
    CHECK(c.send(body));
    CHECK(test::status_of(c.read_response()) == 413);
  }
  SECTION("malformed JSON with a valid signature is 400") {
    for (const std::string body : {"{not json", "{\"id\":\"evt_1\",\"type\":", "[]", "{\"id\":42}", ""}) {
      INFO(body);
      CHECK(target.status_of_delivery(hook_a, body, sim::stripe::simulator::sign(body, secret_a, now_s())) == 400);
    }
  }
  SECTION("SQL-looking tenant ids in the path are 404 and every table is still there") {
    const auto event = target.event_for_a();
    const std::string signature = sim::stripe::simulator::sign(event.body, secret_a, now_s());
    for (const std::string& tenant :
         {std::string("'%20OR%201=1%20--"), target.tenant_a + "';DROP%20TABLE%20bankworker.stripe_events;--",
          std::string("00000000-0000-0000-0000-000000000000%27%20OR%20%271%27=%271"),
          std::string("%00")}) {
      INFO(tenant);
      CHECK(target.status_of_delivery(target.base + "/webhooks/stripe/" + tenant, event.body, signature) == 404);
    }
    CHECK(count(*target.admin, "SELECT count(*) FROM pg_tables WHERE schemaname = 'bankworker' AND tablename = 'stripe_events'") == 1);
  }
  CHECK(target.stored_rows() == before);
  CHECK(target.events_of(target.tenant_a) == 0);
  target.legitimate_delivery_is_stored();
}

TEST_CASE("a signed event holding any valid JSON, \\u0000 included, is acknowledged, stored byte for byte and posted",
          "[pg][attack]") {
  attack_target target;
  const auto event = target.event_for_a();
  REQUIRE(event.body.starts_with("{"));
  // A field the sender may put anywhere (a customer's metadata, say), with the escape that jsonb
  // refuses; the rest of the event is Stripe's own.
  const std::string body = R"({"note": "nul \u0000 byte",)" + event.body.substr(1);
  const std::string hook_a = target.hook(target.tenant_a);
  CHECK(target.status_of_delivery(hook_a, body, sim::stripe::simulator::sign(body, secret_a, now_s())) == 200);
  {
    pqxx::work tx(*target.admin);
    CHECK(tx.exec_params1("SELECT body FROM bankworker.stripe_events WHERE event_id = $1", event.event_id)[0]
              .as<std::string>() == body);
  }
  CHECK(eventually([&] {
    return count(*target.admin, "SELECT count(*) FROM bankworker.stripe_events WHERE event_id = '" + event.event_id +
                                    "' AND state IN ('posted', 'ignored')") == 1;
  }));
}

TEST_CASE("attack matrix: header bombs and slowloris connections are cut off while others are served", "[pg][attack]") {
  attack_target target;
  const long before = target.stored_rows();

  SECTION("one huge header, and thousands of small ones, are 431") {
    const test::raw_connection huge(target.port);
    huge.send("POST /webhooks/stripe/" + target.tenant_a + " HTTP/1.1\r\nHost: x\r\nX-Bomb: " +
              std::string(17 * 1024, 'a') + "\r\n\r\n");
    CHECK(test::status_of(huge.read_response()) == 431);
    std::string many = "POST /webhooks/stripe/" + target.tenant_a + " HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 2'000; ++i) many += "X-" + std::to_string(i) + ": b\r\n";
    const test::raw_connection bomb(target.port);
    bomb.send(many + "\r\n");
    CHECK(test::status_of(bomb.read_response()) == 431);
    target.legitimate_delivery_is_stored();
  }
  SECTION("slowloris: heads that never finish are dropped at the 10 s header timeout, others served meanwhile") {
    constexpr int slow_clients = 50;
    std::vector<std::unique_ptr<test::raw_connection>> slow;
    for (int i = 0; i < slow_clients; ++i) {
      slow.push_back(std::make_unique<test::raw_connection>(target.port, "127.0.0.3"));
      REQUIRE(slow.back()->connected());
      slow.back()->send("POST /webhooks/stripe/" + target.tenant_a + " HTTP/1.1\r\nHost: x\r\n");
    }
    const auto started = std::chrono::steady_clock::now();
    // A byte now and then does not buy more time: the deadline covers the whole head.
    for (int round = 0; round < 4; ++round) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      for (auto& c : slow) c->send("X");
      target.legitimate_delivery_is_stored();
    }
    for (auto& c : slow) CHECK(c->closed_within(15'000));
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(14));
    CHECK(eventually([&] {
      return metric_value(target.metrics(), "bankworker_http_refused_total{reason=\"header_timeout\"}") >= slow_clients;
    }));
  }
  // Each legitimate event is one inbox row, which is also its posting's place in the queue (issue
  // #21: no job row per event); nothing of the attacker's.
  CHECK(target.stored_rows() - before == target.legitimate_events);
  CHECK(target.events_of(target.tenant_a) == 0);
}

TEST_CASE("attack matrix: 2,000 idle connections leave the worker serving, and one address gets at most 128",
          "[pg][attack]") {
  constexpr int idle_total = 2'000;
  // The test's sockets, the worker's (it inherits the limit) and some slack for both.
  if (!raise_open_files(2 * idle_total + 512)) {
    WARN("skipped: RLIMIT_NOFILE's hard limit is below " << 2 * idle_total + 512
                                                         << "; raise it (ulimit -Hn) to run the idle-connection flood");
    return;
  }
  attack_target target;
  const long before = target.stored_rows();

  SECTION("2,000 idle connections from 16 addresses: all held open, a legitimate request still served") {
    std::vector<std::unique_ptr<test::raw_connection>> idle;
    for (int i = 0; i < idle_total; ++i) {
      idle.push_back(std::make_unique<test::raw_connection>(target.port, "127.0.1." + std::to_string(1 + i % 16)));
      REQUIRE(idle.back()->connected());
    }
    target.legitimate_delivery_is_stored();
    CHECK(test::http_get(target.admin_base + "/healthz").status == 200);
    // None of the idle ones was refused: 125 per address is under the per-address cap, 2,000 under the total.
    CHECK_THAT(target.metrics(), Catch::Contains("bankworker_http_refused_total{reason=\"connection_limit\"} 0"));
    // Each idle connection is still usable: the webhook port answers it from its route table (it
    // serves no /healthz since that moved to the admin address, hence the 404, an answer all the same).
    idle.front()->send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(test::status_of(idle.front()->read_response()) == 404);
  }
  SECTION("one address opening 2,000 gets 128; the rest are answered 503 and closed; others are served") {
    std::vector<std::unique_ptr<test::raw_connection>> flood;
    for (int i = 0; i < idle_total; ++i) {
      flood.push_back(std::make_unique<test::raw_connection>(target.port, "127.0.0.2"));
      REQUIRE(flood.back()->connected());
    }
    target.legitimate_delivery_is_stored();
    CHECK(eventually([&] {
      return target.metrics().find("bankworker_http_refused_total{reason=\"connection_limit\"} " +
                                   std::to_string(idle_total - 128)) != std::string::npos;
    }));
    // The last one is among the refused: a 503 naming the cause, then the server closes it.
    const std::string refused = flood.back()->read_response();
    CHECK(test::status_of(refused) == 503);
    CHECK_THAT(refused, Catch::Contains("too many connections"));
  }
  CHECK(target.stored_rows() - before == target.legitimate_events);  // one inbox row each, no job row (#21)
}

TEST_CASE("attack matrix: Plaid webhooks signed with alg none or HS256 are 400 and change nothing", "[pg][attack]") {
  attack_target target;
  const long jobs_before = count(*target.admin, "SELECT count(*) FROM bankworker.jobs");
  // An item of the simulator's, so the webhook names a real access token's item.
  const std::string exchanged = target.plaid.post(
      "/item/public_token/exchange", std::string("{\"client_id\":\"") + test::sim_client_id + "\",\"secret\":\"" +
                                         test::sim_secret + "\",\"public_token\":\"" + target.plaid.public_token() + "\"}");
  const std::size_t at = exchanged.find("\"access_token\":\"");
  REQUIRE(at != std::string::npos);
  const std::string token = exchanged.substr(at + 16, exchanged.find('"', at + 16) - at - 16);
  const std::string hook = target.base + "/webhooks/plaid";
  for (const char* signing : {"alg_none", "alg_hs256"}) {
    INFO(signing);
    CHECK_THAT(target.plaid.post("/sim/webhooks/send", "{\"access_token\":\"" + token + "\",\"url\":\"" + hook +
                                                           "\",\"signing\":\"" + signing + "\"}"),
               Catch::Contains("\"status\":400"));
  }
  CHECK(count(*target.admin, "SELECT count(*) FROM bankworker.jobs") == jobs_before);
  CHECK_THAT(target.metrics(),
             Catch::Contains("bankworker_webhook_requests_total{provider=\"plaid\",outcome=\"alg_not_allowed\"} 2"));
  // A properly signed one is verified (and, for an item no tenant holds, acknowledged with nothing to do).
  CHECK_THAT(target.plaid.post("/sim/webhooks/send", "{\"access_token\":\"" + token + "\",\"url\":\"" + hook + "\"}"),
             Catch::Contains("\"status\":200"));
  target.legitimate_delivery_is_stored();
}

TEST_CASE("attack matrix: as bankworker_app, one tenant cannot read or request work for another", "[pg][attack]") {
  attack_target target;
  target.legitimate_delivery_is_stored();
  REQUIRE(eventually([&] {
    return count(*target.admin, "SELECT count(*) FROM bankworker.journal_entries WHERE tenant_id = '" + target.tenant_b +
                                    "'") > 0;
  }));
  const long jobs_before = count(*target.admin, "SELECT count(*) FROM bankworker.jobs");
  const test::scope_key key = test::scope_key::random("attack");
  {
    pqxx::work tx(*target.admin);
    test::add_scope_key(tx, key);
    tx.commit();
  }
  // The app's own login (a member of bankworker_app only), scoped to A by a genuine token for A;
  // the attacker then writes B into the setting that used to decide the scope.
  pqxx::connection app(target.database.app_url());
  const auto as_app = [&](const std::string& tenant, const std::string& sql) {
    pqxx::work tx(app);
    tx.exec_params("SELECT bankworker.enter_tenant($1)", test::mint_scope_token(key, tenant, test::unix_now() + 300));
    tx.exec_params("SELECT set_config('bankworker.tenant_id', $1, true)", target.tenant_b);
    return tx.exec1(sql)[0].as<long>();
  };
  const std::string b_entries =
      "SELECT count(*) FROM bankworker.journal_entries WHERE tenant_id = '" + target.tenant_b + "'";
  CHECK(as_app(target.tenant_a, b_entries) == 0);
  CHECK(as_app(target.tenant_b, b_entries) > 0);  // the same query with B's own token sees them
  // Sealed secrets, the inbox and the queue are not the app's to read or write, whatever the scope.
  for (const std::string& sql : {std::string("SELECT count(*) FROM bankworker.sealed_secrets"),
                                std::string("SELECT count(*) FROM bankworker.stripe_events"),
                                "SELECT count(*) FROM (SELECT bankworker.request_sync('" + target.tenant_b +
                                    "', '00000000-0000-4000-8000-000000000000')) requested"}) {
    INFO(sql);
    CHECK_THROWS_AS(as_app(target.tenant_a, sql), pqxx::sql_error);
  }
  CHECK(count(*target.admin, "SELECT count(*) FROM bankworker.jobs") == jobs_before);
  target.legitimate_delivery_is_stored();
}
