// Reconciliation against the real database (ledger/reconcile.hpp, migration 0034): payouts posted
// through the ledger, bank rows as a sync stores them, decisions read back.
#include <catch2/catch.hpp>

#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"
#include "ledger/reconcile.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

constexpr const char* connection_id = "00000000-0000-4000-8000-00000000000c";
constexpr std::int64_t friday_s = 1'709'294'400;  // 2024-03-01 12:00 UTC

struct reconciliation {
  test::scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool();
  std::unique_ptr<db::key_store> key_store = test::test_key_store();
  const db::key_store& keys = *key_store;
  core::uuid tenant = ledger::create_tenant(*connections, *key_store, "Reconciled Co");

  reconciliation() {
    admin("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
          " VALUES ($1::text::uuid, '" + std::string(connection_id) + "', 'sandbox', 'active')");
    admin("INSERT INTO bankworker.accounts (tenant_id, account_id, connection_id, name, type, currency)"
          " VALUES ($1::text::uuid, 'acc_checking', '" + std::string(connection_id) + "', 'Checking', 'depository', 'USD')");
    db::with_tenant(*connections, tenant, [&](pqxx::work& tx) {
      ledger::map_bank_account(tx, keys, tenant, "acc_checking", "bank", 100, "test");
    });
  }

  void admin(const std::string& sql) {
    const auto connection = database.connect_as_admin();
    pqxx::work tx(*connection);
    tx.exec_params(sql, tenant.to_string());
    tx.commit();
  }
  void set_connection_status(const std::string& status) {
    const auto connection = database.connect_as_admin();
    pqxx::work tx(*connection);
    tx.exec_params("UPDATE bankworker.connections SET status = $2 WHERE tenant_id = $1::text::uuid",
                   tenant.to_string(), status);
    tx.commit();
  }
  template <class F>
  auto in_tenant(F&& work) {
    return db::with_tenant(*connections, tenant, std::forward<F>(work));
  }
  void post_payout(const std::string& id, std::int64_t amount, std::int64_t at_s = friday_s) {
    in_tenant([&](pqxx::work& tx) {
      ledger::post_entry(tx, {id + ":payout", "Payout " + id, at_s, "evt_" + id,
                              {{"bank", amount, "USD"}, {"stripe.clearing", -amount, "USD"}}});
    });
  }
  void fail_payout(const std::string& id, std::int64_t amount) {
    in_tenant([&](pqxx::work& tx) {
      ledger::post_entry(tx, {id + ":payout_failed", "Payout " + id + " failed", friday_s, "evt_f_" + id,
                              {{"bank", -amount, "USD"}, {"stripe.clearing", amount, "USD"}}});
    });
  }
  // A bank row as the sync stores it (inflow positive), through the runtime role.
  void deposit(const std::string& id, std::int64_t amount, const std::string& date, const std::string& name = "STRIPE",
               bool pending = false, const std::string& pending_id = "") {
    in_tenant([&](pqxx::work& tx) {
      tx.exec_params("INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id,"
                     " amount_minor, currency, date, name, pending, pending_transaction_id)"
                     " VALUES (bankworker.current_tenant(), $1, 'acc_checking', $2::uuid, $3, 'USD', $4::date, $5, $6,"
                     " nullif($7, ''))",
                     id, connection_id, amount, date, name, pending, pending_id);
    });
  }
  void remove(const std::string& id) {
    in_tenant([&](pqxx::work& tx) {
      tx.exec_params("UPDATE bankworker.transactions SET removed_at = now() WHERE transaction_id = $1", id);
    });
  }
  ledger::reconcile_report run(const std::string& today = "2024-03-01") {
    return in_tenant([&](pqxx::work& tx) {
      return ledger::reconcile_tenant(tx, keys, tenant, {}, today + " 12:00:00+00", "test");
    });
  }
  ledger::payout_row row(const std::string& payout_id) {
    const auto rows = in_tenant([](pqxx::work& tx) { return ledger::list_payouts(tx, std::nullopt, 100); });
    for (const auto& r : rows) {
      if (r.payout_id == payout_id) return r;
    }
    FAIL("no payout row " << payout_id);
    return {};
  }
  std::int64_t count(const std::string& sql) {
    return in_tenant([&](pqxx::work& tx) { return tx.exec1(sql)[0].as<std::int64_t>(); });
  }
};

}  // namespace

TEST_CASE("a payout posted before its deposit arrives is matched, and both arrivals queue one job", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  CHECK(r.row("po_1").status == "pending");
  r.deposit("t1", 10'000, "2024-03-04");  // the Monday after
  r.deposit("t_other", 555, "2024-03-04", "COFFEE");
  CHECK(r.count("SELECT count(*) FROM bankworker.jobs WHERE kind = 'reconcile.match' AND state = 'available'") == 1);
  r.run();
  const auto matched = r.row("po_1");
  CHECK(matched.status == "matched");
  CHECK(matched.transaction_id == "t1");
  CHECK_THAT(matched.reason, Catch::Contains("1 business day(s) after"));
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.matched' AND subject = 'po_1'") == 1);
}

TEST_CASE("the payout's arrival date, not its event's, is the expected day, and its statement descriptor ranks deposits",
          "[pg][ledger][reconcile]") {
  reconciliation r;
  // Stripe's event came on Friday 2024-03-01; the payout is due Tuesday 2024-03-05 (migration 0040).
  r.in_tenant([&](pqxx::work& tx) {
    ledger::entry payout{"po_late:payout", "Payout po_late", friday_s, "evt_late",
                         {{"bank", 10'000, "USD"}, {"stripe.clearing", -10'000, "USD"}}};
    payout.metadata = {{"arrival_date", "1709596800"}, {"statement_descriptor", "Acme Payout"}};
    ledger::post_entry(tx, payout);
  });
  CHECK(r.row("po_late").expected_on == "2024-03-05");
  CHECK(r.count("SELECT count(*) FROM bankworker.reconcile_payouts WHERE descriptor = 'Acme Payout'") == 1);
  // Friday 2024-03-08 is 3 business days after the Tuesday (5 after the event's day: outside the
  // window). Two equal deposits that day: the one naming the descriptor wins, no tie.
  r.deposit("t_plain", 10'000, "2024-03-08", "STRIPE TRANSFER");
  r.deposit("t_named", 10'000, "2024-03-08", "ACME PAYOUT ST-1234");
  r.run("2024-03-08");
  const auto matched = r.row("po_late");
  CHECK(matched.status == "matched");
  CHECK(matched.transaction_id == "t_named");
  CHECK_THAT(matched.reason, Catch::Contains("3 business day(s) after") && Catch::Contains("statement descriptor"));
  // An arrival_date that is no unix time (only a hand-made entry could have one) falls back to the
  // entry's own day instead of failing the posting.
  r.in_tenant([&](pqxx::work& tx) {
    ledger::entry odd{"po_odd:payout", "Payout po_odd", friday_s, "evt_odd",
                      {{"bank", 7, "USD"}, {"stripe.clearing", -7, "USD"}}};
    odd.metadata = {{"arrival_date", "tomorrow"}};
    ledger::post_entry(tx, odd);
  });
  CHECK(r.row("po_odd").expected_on == "2024-03-01");
}

TEST_CASE("a deposit that arrived before its payout is matched when the payout posts", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.deposit("t1", 10'000, "2024-02-29");  // the day before
  r.post_payout("po_1", 10'000);
  r.run();
  CHECK(r.row("po_1").status == "matched");
  CHECK(r.row("po_1").transaction_id == "t1");
}

TEST_CASE("re-running changes nothing and audits nothing more", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 10'000, "2024-03-01");
  CHECK(r.run().changed == 1);
  const auto audits = r.count("SELECT count(*) FROM bankworker.audit_log");
  CHECK(r.run().changed == 0);
  CHECK(r.run().changed == 0);
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log") == audits);
}

TEST_CASE("a payout without a deposit past its window is missing, and the overdue pass queues its tenant",
          "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.run("2024-03-07");  // Thursday: 4 business days, still in the window
  CHECK(r.row("po_1").status == "pending");
  r.in_tenant([](pqxx::work& tx) { tx.exec("DELETE FROM bankworker.jobs"); });
  {
    auto lease = r.connections->checkout();
    pqxx::work tx(lease.connection());
    CHECK(ledger::schedule_overdue_payouts(tx, std::string("2024-03-11 12:00:00+00")) == 1);
    tx.commit();
  }
  CHECK(r.count("SELECT count(*) FROM bankworker.jobs WHERE kind = 'reconcile.match'") == 1);
  r.run("2024-03-11");
  CHECK(r.row("po_1").status == "missing");
  CHECK(r.in_tenant([](pqxx::work& tx) {
          return ledger::list_payouts(tx, ledger::payout_status::missing, 10);
        }).size() == 1);
}

TEST_CASE("a deposit short by less than the tolerance is short with the difference", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 9'950, "2024-03-01");
  r.run();
  CHECK(r.row("po_1").status == "short");
  CHECK(r.row("po_1").difference_minor == -50);
  CHECK(r.row("po_1").transaction_id == "t1");
}

TEST_CASE("a matched payout that then fails is a conflict", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 10'000, "2024-03-01");
  r.run();
  REQUIRE(r.row("po_1").status == "matched");
  r.fail_payout("po_1", 10'000);
  r.run();
  CHECK(r.row("po_1").status == "conflict");
  CHECK(r.row("po_1").transaction_id == "t1");
}

TEST_CASE("two equal deposits are left for review with both named; one deposit never settles two payouts",
          "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 10'000, "2024-03-01");
  r.deposit("t2", 10'000, "2024-03-01");
  r.run();
  CHECK(r.row("po_1").status == "review");
  CHECK(r.row("po_1").candidates == std::vector<std::string>{"t1", "t2"});

  reconciliation s;
  s.post_payout("po_a", 10'000);
  s.post_payout("po_b", 10'000);
  s.deposit("t1", 10'000, "2024-03-01");
  s.run();
  CHECK(s.row("po_a").status == "matched");
  CHECK(s.row("po_b").status == "pending");
}

TEST_CASE("a pending deposit that posts keeps its match; a removed one goes back to review", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("p1", 10'000, "2024-03-01", "STRIPE", true);
  r.run();
  REQUIRE(r.row("po_1").transaction_id == "p1");
  r.remove("p1");
  r.deposit("t1", 10'000, "2024-03-04", "STRIPE", false, "p1");
  const auto report = r.run();
  CHECK(report.relinked == 1);
  CHECK(r.row("po_1").status == "matched");
  CHECK(r.row("po_1").transaction_id == "t1");

  r.remove("t1");
  r.run();
  CHECK(r.row("po_1").status == "review");
  CHECK(r.row("po_1").transaction_id.empty());
  CHECK(r.row("po_1").candidates == std::vector<std::string>{"t1"});
  r.run();  // stays in review for a person
  CHECK(r.row("po_1").status == "review");
}

TEST_CASE("a run that crashes before commit leaves nothing; the next one matches once", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 10'000, "2024-03-01");
  struct crash {};
  CHECK_THROWS_AS(r.in_tenant([&](pqxx::work& tx) {
    ledger::reconcile_tenant(tx, r.keys, r.tenant, {}, std::string("2024-03-01"), "test");
    throw crash{};
  }), crash);
  CHECK(r.row("po_1").status == "pending");
  r.run();
  r.run();
  CHECK(r.row("po_1").status == "matched");
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE action LIKE 'reconcile.matched'") == 1);
}

TEST_CASE("a revoked connection keeps its matches", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_1", 10'000);
  r.deposit("t1", 10'000, "2024-03-01");
  r.run();
  r.set_connection_status("revoked");
  r.run();
  CHECK(r.row("po_1").status == "matched");
  CHECK(r.row("po_1").transaction_id == "t1");

  // No new ones: a bank row the revoked connection left behind is no payout's deposit.
  r.deposit("t2", 20'000, "2024-03-01");
  r.post_payout("po_2", 20'000);
  r.run();
  CHECK(r.row("po_2").status == "pending");
  CHECK(r.row("po_2").transaction_id.empty());
  CHECK(r.run("2024-03-15").changed == 1);
  CHECK(r.row("po_2").status == "missing");
  CHECK(r.row("po_1").transaction_id == "t1");
}

TEST_CASE("a connection being revoked gives no new matches either", "[pg][ledger][reconcile]") {
  reconciliation r;
  r.deposit("t1", 10'000, "2024-03-01");
  r.set_connection_status("revoking");
  r.post_payout("po_1", 10'000);
  r.run();
  CHECK(r.row("po_1").status == "pending");
  // The connection's status is what keeps the deposit out: active again, the deposit is found.
  r.set_connection_status("active");
  r.run();
  CHECK(r.row("po_1").status == "matched");
  CHECK(r.row("po_1").transaction_id == "t1");
}

TEST_CASE("one run audits each changed decision once, with its status, bank row and difference, and nothing else",
          "[pg][ledger][reconcile]") {
  reconciliation r;
  r.post_payout("po_matched", 10'000);
  r.post_payout("po_short", 20'000);
  r.post_payout("po_tie", 30'000);
  r.post_payout("po_missing", 40'000, friday_s - 14 * 86'400);
  r.post_payout("po_waiting", 50'000);
  r.deposit("t_matched", 10'000, "2024-03-01");
  r.deposit("t_short", 19'950, "2024-03-01");
  r.deposit("t_tie_a", 30'000, "2024-03-01");
  r.deposit("t_tie_b", 30'000, "2024-03-01");
  const auto report = r.run();
  CHECK(report.payouts_examined == 5);
  CHECK(report.changed == 4);
  const std::string decisions =
      "SELECT count(*) FROM bankworker.audit_log WHERE action LIKE 'reconcile.%' AND action <> 'reconcile.account_mapped'";
  CHECK(r.count(decisions) == 4);
  const auto audited = [&](const std::string& payout, const std::string& action, const std::string& details) {
    return r.in_tenant([&](pqxx::work& tx) {
      return tx.exec_params1("SELECT count(*) FROM bankworker.audit_log WHERE subject = $1 AND action = $2"
                             " AND details = $3::jsonb",
                             payout, action, details)[0]
          .as<std::int64_t>();
    });
  };
  CHECK(audited("po_matched", "reconcile.matched", R"({"transaction_id":"t_matched","difference_minor":0})") == 1);
  CHECK(audited("po_short", "reconcile.short", R"({"transaction_id":"t_short","difference_minor":-50})") == 1);
  CHECK(audited("po_tie", "reconcile.review", R"({"transaction_id":"","difference_minor":0})") == 1);
  CHECK(audited("po_missing", "reconcile.missing", R"({"transaction_id":"","difference_minor":0})") == 1);
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE subject = 'po_waiting'") == 0);
  // The tie is decided again on every run, and audited again only if its decision changes.
  r.run();
  CHECK(r.count(decisions) == 4);
}

TEST_CASE("a run over more payouts than one batch decides and audits each once", "[pg][ledger][reconcile]") {
  reconciliation r;
  constexpr std::int64_t payouts = static_cast<std::int64_t>(ledger::reconcile_batch_payouts_max) + 5;
  // Amounts 1,000 minor units apart: no payout's deposit is within another's tolerance.
  r.in_tenant([&](pqxx::work& tx) {
    for (std::int64_t i = 0; i < payouts; ++i) {
      const std::string id = "po_" + std::to_string(i);
      const std::int64_t amount = 10'000 + 1'000 * i;
      ledger::post_entry(tx, {id + ":payout", "Payout " + id, friday_s, "evt_" + id,
                              {{"bank", amount, "USD"}, {"stripe.clearing", -amount, "USD"}}});
    }
    tx.exec_params("INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id,"
                   " amount_minor, currency, date, name, pending)"
                   " SELECT bankworker.current_tenant(), 't_' || i, 'acc_checking', $1::uuid, 10000 + 1000 * i, 'USD',"
                   " date '2024-03-01', 'STRIPE', false FROM generate_series(0, $2 - 1) AS i",
                   connection_id, payouts);
  });
  const auto report = r.run();
  CHECK(report.payouts_examined == static_cast<std::size_t>(payouts));
  CHECK(report.changed == static_cast<std::size_t>(payouts));
  CHECK(r.count("SELECT count(*) FROM bankworker.reconcile_payouts WHERE status = 'matched'"
                " AND transaction_id = 't_' || substr(payout_id, 4)") == payouts);
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.matched'") == payouts);
  CHECK(r.count("SELECT count(DISTINCT subject) FROM bankworker.audit_log WHERE action = 'reconcile.matched'") ==
        payouts);
  CHECK(r.run().changed == 0);
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE action LIKE 'reconcile.%'"
                " AND action <> 'reconcile.account_mapped'") == payouts);
}

TEST_CASE("mapping refuses an unknown bank account and a non-asset ledger account", "[pg][ledger][reconcile]") {
  reconciliation r;
  CHECK_THROWS_AS(r.in_tenant([&](pqxx::work& tx) {
    ledger::map_bank_account(tx, r.keys, r.tenant, "acc_nope", "bank", 0, "test");
  }), std::invalid_argument);
  CHECK_THROWS_AS(r.in_tenant([&](pqxx::work& tx) {
    ledger::map_bank_account(tx, r.keys, r.tenant, "acc_checking", "revenue", 0, "test");
  }), std::invalid_argument);
  CHECK(r.count("SELECT count(*) FROM bankworker.audit_log WHERE action = 'reconcile.account_mapped'") == 1);
}
