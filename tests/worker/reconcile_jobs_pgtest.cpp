// Reconciliation end to end (issue #19, worker/reconcile_jobs.cpp): the real `bankworker run`
// with both simulators. Stripe's payout.paid events are signed and delivered by the Stripe
// simulator to the webhook route, the deposits are Plaid's, served by the Plaid simulator and
// synced by the worker, the bank account is mapped with the real CLI, and `reconcile list` shows
// what a finance team sees: one payout matched, one missing, one short, whichever side arrived
// first.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <memory>

#include <pqxx/pqxx>

#include "tests/support/child.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/plaid_sim.hpp"
#include "tests/support/polling.hpp"
#include "tests/support/process.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

constexpr const char* webhook_secret = "whsec_reconcile_e2e_secret";
constexpr std::int64_t day_s = 86'400;
// Amounts no generated Plaid transaction has (the simulator's history is small everyday spending).
constexpr std::int64_t matched_minor = 1'234'500;
constexpr std::int64_t missing_minor = 2'345'600;
constexpr std::int64_t short_minor = 3'456'700;
constexpr std::int64_t short_by_minor = 50;
constexpr std::int64_t tolerance_minor = 100;

std::int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Midnight UTC of the day `at_s` falls on: how Stripe states a payout's arrival_date.
std::int64_t midnight_s(std::int64_t at_s) { return at_s - at_s % day_s; }

std::string iso_date(std::int64_t at_s) {
  const std::time_t t = static_cast<std::time_t>(at_s);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[11];
  std::strftime(text, sizeof text, "%Y-%m-%d", &utc);
  return text;
}

// One tenant with a linked Plaid bank, a Stripe endpoint secret and its USD checking account
// mapped to the ledger's bank account, and a worker running.
struct reconciled_tenant {
  test::scratch_database database;
  test::root_key_file key;
  test::plaid_simulator plaid{{"--transactions", "20"}};
  test::child_process stripe{STRIPE_SIM_BINARY, {"--port", "0"}, {}};
  std::string stripe_url = test::base_url_from(stripe);
  std::uint16_t port = test::free_loopback_port();
  std::uint16_t admin_port = test::free_loopback_port();
  std::map<std::string, std::string> env = {{"BANKWORKER_DATABASE_URL", database.runtime_url()},
                                            {"BANKWORKER_ROOT_KEY_FILE", key.path_text()},
                                            {"BANKWORKER_HTTP_LISTEN", "127.0.0.1:" + std::to_string(port)},
                                            {"BANKWORKER_ADMIN_LISTEN", "127.0.0.1:" + std::to_string(admin_port)},
                                            {"BANKWORKER_PLAID_BASE_URL", plaid.url},
                                            {"BANKWORKER_PLAID_CLIENT_ID", test::sim_client_id},
                                            {"BANKWORKER_PLAID_SECRET", test::sim_secret},
                                            {"BANKWORKER_DRAIN_TIMEOUT", "5"},
                                            {"BANKWORKER_LOG_LEVEL", "warn"}};
  std::unique_ptr<pqxx::connection> admin = database.connect_as_admin();
  std::string tenant;
  std::string connection;
  std::string access_token;
  std::string checking;  // the Plaid account id of the USD checking account
  std::unique_ptr<test::child_process> worker;

  reconciled_tenant() {
    const auto created = test::run_bankworker({"tenant", "create", "--name", "Reconciled Run Ltd"}, env);
    REQUIRE(created.exit_code == 0);
    tenant = created.out.substr(0, created.out.size() - 1);
    const std::string secret_path = key.path().parent_path().string() + "/whsec";
    std::ofstream(secret_path) << webhook_secret << "\n";
    ::chmod(secret_path.c_str(), 0600);
    REQUIRE(test::run_bankworker({"stripe", "secret", "add", "--tenant", tenant, "--secret-file", secret_path}, env)
                .exit_code == 0);
    worker = std::make_unique<test::child_process>(BANKWORKER_BINARY, std::vector<std::string>{"run"}, env);
    REQUIRE(test::eventually(
        [&] { return test::http_get("http://127.0.0.1:" + std::to_string(admin_port) + "/readyz").status == 200; }));

    const auto linked = test::run_bankworker(
        {"--json", "plaid", "link", "--tenant", tenant, "--public-token", plaid.public_token(), "--wait"}, env);
    INFO(linked.out << linked.err);
    REQUIRE(linked.exit_code == 0);
    const auto at = linked.out.find("\"connection_id\":\"");
    REQUIRE(at != std::string::npos);
    connection = linked.out.substr(at + 17, 36);
    REQUIRE(test::eventually([&] {
      return test::count(*admin, "SELECT count(*) FROM bankworker.connections WHERE last_synced_at IS NOT NULL") == 1;
    }));
    pqxx::work tx(*admin);
    const pqxx::row found = tx.exec_params1(
        "SELECT c.item_id, a.account_id FROM bankworker.connections c JOIN bankworker.accounts a USING (connection_id)"
        " WHERE c.connection_id = $1::uuid AND a.currency = 'USD' AND a.subtype = 'checking'",
        connection);
    access_token = plaid.access_token_of(found[0].as<std::string>());
    checking = found[1].as<std::string>();
    tx.commit();

    const auto mapped = test::run_bankworker({"reconcile", "map", "--tenant", tenant, "--plaid-account", checking,
                                              "--ledger-account", "bank", "--tolerance-minor",
                                              std::to_string(tolerance_minor)},
                                             env);
    INFO(mapped.out << mapped.err);
    REQUIRE(mapped.exit_code == 0);
  }

  ~reconciled_tenant() {
    if (worker) {
      worker->signal(SIGTERM);
      CHECK(worker->wait(std::chrono::seconds(20)) == 0);
    }
  }

  // A payout.paid event from the Stripe simulator, signed and delivered to the tenant's webhook.
  void pay_out(std::int64_t amount_minor, std::int64_t arrival_s, const std::string& descriptor) {
    const std::string answer =
        test::http_post(stripe_url + "/sim/trigger",
                        "{\"kind\":\"payout\",\"amount\":" + std::to_string(amount_minor) +
                            ",\"currency\":\"usd\",\"arrival_date\":" + std::to_string(arrival_s) +
                            ",\"statement_descriptor\":\"" + descriptor + "\",\"mode\":\"valid\",\"secret\":\"" +
                            webhook_secret + "\",\"deliver_to\":\"http://127.0.0.1:" + std::to_string(port) +
                            "/webhooks/stripe/" + tenant + "\"}")
            .body;
    CHECK_THAT(answer, Catch::Contains("\"statuses\":[200]"));
  }

  // A posted deposit at the bank (Plaid's sign: money in is negative), then a sync asked for and
  // waited on through the CLI, as an operator would.
  void deposit(std::int64_t amount_minor, std::int64_t booked_s, const std::string& name) {
    plaid.post("/sim/transactions/add", "{\"access_token\":\"" + access_token + "\",\"account_id\":\"" + checking +
                                            "\",\"amount_minor\":" + std::to_string(-amount_minor) + ",\"date\":\"" +
                                            iso_date(booked_s) + "\",\"name\":\"" + name + "\",\"pending\":false}");
  }
  void sync() {
    const auto synced =
        test::run_bankworker({"connections", "sync", "--tenant", tenant, "--connection", connection, "--wait"}, env);
    INFO(synced.out << synced.err);
    REQUIRE(synced.exit_code == 0);
  }

  std::string status_of(std::int64_t amount_minor) {
    pqxx::work tx(*admin);
    const pqxx::result rows = tx.exec_params(
        "SELECT status FROM bankworker.reconcile_payouts WHERE amount_minor = $1", amount_minor);
    return rows.empty() ? "" : rows[0][0].as<std::string>();
  }
  bool settled() {
    return status_of(matched_minor) == "matched" && status_of(missing_minor) == "missing" &&
           status_of(short_minor) == "short";
  }
  // The `reconcile list` line of the payout of `amount_minor`.
  static std::string line_of(const std::string& listing, std::int64_t amount_minor) {
    for (const std::string& line : test::lines_of(listing)) {
      if (line.find(" " + std::to_string(amount_minor) + " USD ") != std::string::npos) return line;
    }
    return "";
  }
};

}  // namespace

TEST_CASE("through bankworker run, payouts are matched, missing or short whichever side arrives first",
          "[pg][e2e][reconcile]") {
  reconciled_tenant r;
  const std::int64_t today_s = midnight_s(now_s());
  const std::int64_t long_ago_s = today_s - 12 * day_s;  // past any window of 4 business days
  const auto pay_out_all = [&] {
    r.pay_out(matched_minor, today_s, "RUNLTD PAYOUT");
    r.pay_out(missing_minor, long_ago_s, "RUNLTD PAYOUT");
    r.pay_out(short_minor, today_s, "RUNLTD PAYOUT");
  };
  const auto deposit_all = [&] {
    // The bank shows the descriptor; the short deposit lost 50 cents on the way; nothing arrived
    // for the payout of long ago.
    r.deposit(matched_minor, today_s, "RUNLTD PAYOUT ST-A1");
    r.deposit(short_minor - short_by_minor, today_s, "STRIPE TRANSFER");
    r.sync();
  };

  SECTION("payouts posted first, deposits synced after") {
    pay_out_all();
    REQUIRE(test::eventually([&] {
      return test::count(*r.admin, "SELECT count(*) FROM bankworker.reconcile_payouts WHERE status = 'pending'") == 2 &&
             r.status_of(missing_minor) == "missing";
    }));
    deposit_all();
  }
  SECTION("deposits synced first, payouts posted after") {
    deposit_all();
    pay_out_all();
  }
  REQUIRE(test::eventually([&] { return r.settled(); }, std::chrono::seconds(30)));

  const auto listed = test::run_bankworker({"reconcile", "list", "--tenant", r.tenant}, r.env);
  INFO(listed.out << listed.err);
  REQUIRE(listed.exit_code == 0);
  const std::string matched = reconciled_tenant::line_of(listed.out, matched_minor);
  CHECK_THAT(matched, Catch::Contains(" matched ") && Catch::Contains("expected_on=" + iso_date(today_s)) &&
                          Catch::Contains("transaction=") && Catch::Contains("descriptor evidence: statement descriptor"));
  const std::string missing = reconciled_tenant::line_of(listed.out, missing_minor);
  // The expected day is the payout's arrival_date, not the day its event came.
  CHECK_THAT(missing, Catch::Contains(" missing ") && Catch::Contains("expected_on=" + iso_date(long_ago_s)));
  CHECK_THAT(missing, !Catch::Contains("transaction="));
  const std::string short_paid = reconciled_tenant::line_of(listed.out, short_minor);
  CHECK_THAT(short_paid, Catch::Contains(" short ") && Catch::Contains("difference_minor=-50"));

  // The missing one is what `--status missing` and the metric show.
  const auto only_missing = test::run_bankworker({"reconcile", "list", "--tenant", r.tenant, "--status", "missing"}, r.env);
  CHECK(test::lines_of(only_missing.out).size() == 1);
  CHECK(test::eventually([&] {
    return test::metric_value(test::http_get("http://127.0.0.1:" + std::to_string(r.admin_port) + "/metrics").body,
                              "bankworker_reconcile_payouts{status=\"missing\"}") == 1;
  }));

  // Each decision was audited once, and neither another sync nor a run by hand changes anything.
  CHECK(test::count(*r.admin, "SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.matched'") == 1);
  CHECK(test::count(*r.admin, "SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.short'") == 1);
  CHECK(test::count(*r.admin, "SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.missing'") == 1);
  r.sync();
  const auto again = test::run_bankworker({"reconcile", "run", "--tenant", r.tenant}, r.env);
  CHECK_THAT(again.out, Catch::Contains("0 changed"));
  CHECK(test::run_bankworker({"reconcile", "list", "--tenant", r.tenant}, r.env).out == listed.out);
}
