// Posting against the real database: idempotent by key, conflicts refused, balances exact.
#include <catch2/catch.hpp>

#include <thread>

#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"
#include "ledger/tenants.hpp"
#include "tests/support/scratch_database.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;

namespace {

ledger::entry gross(std::string key, std::int64_t amount, std::string currency = "USD") {
  return {std::move(key), "test charge", 1'700'000'000, "evt_test",
          {{"stripe.clearing", amount, currency}, {"revenue", -amount, currency}}};
}

struct ledger_database {
  test::scratch_database database;
  std::unique_ptr<db::pool> connections = database.worker_pool();
  core::uuid tenant = ledger::create_tenant(*connections, *test::test_key_store(), "Ledger Co");
  ledger_database() {
    db::with_tenant(*connections, tenant, [](pqxx::work& tx) { ledger::ensure_chart(tx); });
  }
  template <class F>
  auto in_tenant(F&& work) {
    return db::with_tenant(*connections, tenant, std::forward<F>(work));
  }
};

}  // namespace

TEST_CASE("posting the same entry twice is a no-op; different lines under its key are refused", "[pg][ledger]") {
  ledger_database ledger_db;
  CHECK(ledger_db.in_tenant([](pqxx::work& tx) { return ledger::post_entry(tx, gross("ch_1:gross", 2000)); }) ==
        ledger::post_outcome::posted);
  CHECK(ledger_db.in_tenant([](pqxx::work& tx) { return ledger::post_entry(tx, gross("ch_1:gross", 2000)); }) ==
        ledger::post_outcome::already_posted);
  CHECK_THROWS_AS(ledger_db.in_tenant([](pqxx::work& tx) { return ledger::post_entry(tx, gross("ch_1:gross", 2100)); }),
                  ledger::entry_conflict);
  const auto count = ledger_db.in_tenant([](pqxx::work& tx) {
    return tx.exec1("SELECT count(*) FROM bankworker.journal_lines")[0].as<int>();
  });
  CHECK(count == 2);
}

TEST_CASE("posting many entries at once: each once, repeats are no-ops, a disagreeing key is refused",
          "[pg][ledger]") {
  ledger_database ledger_db;
  std::vector<ledger::entry> first;
  for (int i = 0; i < 50; ++i) first.push_back(gross("ch_many_" + std::to_string(i) + ":gross", 100 + i));
  first.push_back(gross("ch_yen:gross", 5000, "JPY"));
  std::vector<const ledger::entry*> pointers;
  for (const auto& e : first) pointers.push_back(&e);
  // The same key twice with the same lines, as two events about one charge in one batch: one entry.
  const ledger::entry again = gross("ch_many_7:gross", 107);
  pointers.push_back(&again);
  CHECK(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entries(tx, pointers); }) == 51);
  // Everything again, plus one new entry: only the new one is inserted.
  const ledger::entry fresh = gross("ch_fresh:gross", 42);
  pointers.push_back(&fresh);
  CHECK(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entries(tx, pointers); }) == 1);

  const auto totals = ledger_db.in_tenant([](pqxx::work& tx) {
    return tx.exec1("SELECT count(DISTINCT entry_id), count(*), sum(amount_minor) FILTER (WHERE amount_minor > 0 AND"
                    " currency = 'USD') FROM bankworker.journal_lines");
  });
  CHECK(totals[0].as<int>() == 52);
  CHECK(totals[1].as<int>() == 104);
  CHECK(totals[2].as<std::int64_t>() == 50 * 100 + 49 * 50 / 2 + 42);

  // A key posted before, now with other lines: refused, and nothing of the call stays.
  const ledger::entry disagreeing = gross("ch_many_3:gross", 999);
  const ledger::entry innocent = gross("ch_innocent:gross", 10);
  CHECK_THROWS_AS(ledger_db.in_tenant([&](pqxx::work& tx) {
    return ledger::post_entries(tx, {&innocent, &disagreeing});
  }), ledger::entry_conflict);
  // The same key twice in one call with different lines: refused before the database is asked.
  const ledger::entry twin_a = gross("ch_twin:gross", 1);
  const ledger::entry twin_b = gross("ch_twin:gross", 2);
  CHECK_THROWS_WITH(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entries(tx, {&twin_a, &twin_b}); }),
                    Catch::Contains("given twice with different lines"));
  // A malformed entry among good ones: refused whole.
  ledger::entry unbalanced = gross("ch_bad:gross", 100);
  unbalanced.lines[1].amount_minor = -99;
  CHECK_THROWS_AS(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entries(tx, {&innocent, &unbalanced}); }),
                  ledger::entry_invalid);
  const auto after = ledger_db.in_tenant([](pqxx::work& tx) {
    return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
  });
  CHECK(after == 52);
}

TEST_CASE("the journal function takes a key given twice once, and refuses it with other lines", "[pg][ledger]") {
  // bankworker.post_journal_entries (migration 0056) is also called with entries straight from the
  // Stripe inbox (0057), where two events about one charge may both carry ch_…:gross.
  ledger_database ledger_db;
  const auto call = [&](std::int64_t second_amount) {
    return ledger_db.in_tenant([&](pqxx::work& tx) {
      ledger::entry_arrays arrays;
      arrays.add(gross("ch_twice:gross", 700), core::uuid::parse("00000000-0000-7000-8000-000000000001").value());
      arrays.add(gross("ch_twice:gross", second_amount),
                 core::uuid::parse("00000000-0000-7000-8000-000000000002").value());
      return tx.exec1("SELECT bankworker.post_journal_entries(" + tx.quote(arrays.ids.finish()) + "::uuid[], " +
                      tx.quote(arrays.keys.finish()) + ", " + tx.quote(arrays.descriptions.finish()) + ", " +
                      tx.quote(arrays.occurred.finish()) + "::bigint[], " + tx.quote(arrays.sources.finish()) + ", " +
                      tx.quote(arrays.metadata.finish()) + ", " + tx.quote(arrays.line_entries.finish()) +
                      "::uuid[], " + tx.quote(arrays.line_numbers.finish()) + "::smallint[], " +
                      tx.quote(arrays.accounts.finish()) + ", " + tx.quote(arrays.amounts.finish()) + "::bigint[], " +
                      tx.quote(arrays.currencies.finish()) + ")")[0]
          .as<int>();
    });
  };
  // Other lines under the repeated key: the call fails whole, nothing stays.
  CHECK_THROWS_WITH(call(701), Catch::Contains("ch_twice:gross") && Catch::Contains("different lines"));
  CHECK(ledger_db.in_tenant([](pqxx::work& tx) {
    return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
  }) == 0);
  // The same lines twice: one entry, two lines.
  CHECK(call(700) == 1);
  const auto rows = ledger_db.in_tenant([](pqxx::work& tx) {
    return tx.exec1("SELECT (SELECT count(*) FROM bankworker.journal_entries), count(*), sum(amount_minor)"
                    " FROM bankworker.journal_lines");
  });
  CHECK(rows[0].as<int>() == 1);
  CHECK(rows[1].as<int>() == 2);
  CHECK(rows[2].as<std::int64_t>() == 0);
}

TEST_CASE("malformed entries never reach the database", "[pg][ledger]") {
  ledger_database ledger_db;
  ledger::entry unbalanced = gross("ch_2:gross", 100);
  unbalanced.lines[1].amount_minor = -99;
  CHECK_THROWS_WITH(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entry(tx, unbalanced); }),
                    Catch::Contains("do not balance in USD"));
  ledger::entry unknown = gross("ch_3:gross", 100);
  unknown.lines[0].account = "petty.cash";
  CHECK_THROWS_AS(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entry(tx, unknown); }),
                  ledger::entry_invalid);
  ledger::entry twice = gross("ch_4:gross", 100);
  twice.metadata = {{"arrival_date", "1"}, {"arrival_date", "2"}};
  CHECK_THROWS_WITH(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entry(tx, twice); }),
                    Catch::Contains("metadata key arrival_date given twice"));
  ledger::entry too_long = gross("ch_5:gross", 100);
  too_long.metadata = {{"statement_descriptor", std::string(ledger::metadata_value_bytes_max + 1, 'x')}};
  CHECK_THROWS_AS(ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entry(tx, too_long); }),
                  ledger::entry_invalid);
  CHECK(ledger_db.in_tenant([](pqxx::work& tx) {
          return tx.exec1("SELECT count(*) FROM bankworker.journal_entries")[0].as<int>();
        }) == 0);
  // Well-formed metadata is stored as a JSON object of strings, quotes and all.
  ledger::entry described = gross("ch_6:gross", 100);
  described.metadata = {{"statement_descriptor", "ACME \"Q1\""}};
  ledger_db.in_tenant([&](pqxx::work& tx) { return ledger::post_entry(tx, described); });
  CHECK(ledger_db.in_tenant([](pqxx::work& tx) {
          return tx.exec1("SELECT metadata->>'statement_descriptor' FROM bankworker.journal_entries")[0].as<std::string>();
        }) == "ACME \"Q1\"");
}

TEST_CASE("concurrent postings of one key land exactly once", "[pg][ledger]") {
  ledger_database ledger_db;
  std::atomic<int> posted{0};
  std::atomic<int> already{0};
  std::vector<std::thread> threads;
  db::pool_settings settings;
  settings.connections = 8;
  auto connections = ledger_db.database.worker_pool(settings);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      const auto outcome = db::with_tenant(*connections, ledger_db.tenant, [](pqxx::work& tx) {
        return ledger::post_entry(tx, gross("ch_race:gross", 777));
      });
      (outcome == ledger::post_outcome::posted ? posted : already)++;
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(posted == 1);
  CHECK(already == 7);
}

TEST_CASE("balances and the trial balance are exact per account and currency", "[pg][ledger]") {
  ledger_database ledger_db;
  ledger_db.in_tenant([](pqxx::work& tx) {
    ledger::post_entry(tx, gross("ch_a:gross", 2000));
    ledger::post_entry(tx, gross("ch_b:gross", 1500, "JPY"));
    ledger::post_entry(tx, {"re_a:refund", "refund", 1'700'000'100, "evt_r",
                            {{"refunds", 500, "USD"}, {"stripe.clearing", -500, "USD"}}});
  });
  const auto balances = ledger_db.in_tenant([](pqxx::work& tx) { return ledger::balances(tx); });
  const auto find = [&](std::string_view account, std::string_view currency) {
    for (const auto& b : balances) {
      if (b.account == account && b.currency == currency) return b.amount_minor;
    }
    return std::int64_t{-1};
  };
  CHECK(find("stripe.clearing", "USD") == 1500);
  CHECK(find("revenue", "USD") == -2000);
  CHECK(find("refunds", "USD") == 500);
  CHECK(find("stripe.clearing", "JPY") == 1500);
  const auto trial = ledger_db.in_tenant([](pqxx::work& tx) { return ledger::trial_balance(tx); });
  REQUIRE(trial.size() == 2);
  for (const auto& total : trial) CHECK(total.amount_minor == 0);
}
