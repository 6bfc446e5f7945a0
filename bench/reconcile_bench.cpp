// Reconciliation at scale (issue #19), and what its triggers cost the hot paths.
//
//   reconcile_bench [--payouts N] [--transactions M] [--tenants T] [--trigger-transactions K]
//
// 1. In a scratch database: T tenants, each with one Plaid bank account mapped to its ledger bank
//    account, M bank transactions in all (a year of everyday noise, ± amounts) and N payouts
//    posted as ledger entries (the trigger of migration 0034 records them); 90% of the payouts have
//    their exact deposit 0-3 days after the expected day, 5% a deposit short by less than the
//    tolerance, 5% none. Then ledger::reconcile_tenant runs for every tenant, as the
//    reconcile.match job does (audited decisions included), and again (nothing to change). It
//    prints the matching time, matches per second, the database backends' CPU per payout, and the
//    sequential scans of `transactions` during matching (the candidates must come from an index).
// 2. The triggers' cost: K posting transactions of one two-line entry (the webhook path's unit,
//    through ledger::post_entry) and K/10 pages of 500 bank rows (a sync's unit), each with the
//    reconciliation trigger enabled and disabled in interleaved blocks, for a tenant that has
//    mapped its bank account; the difference per transaction and per row, as a share too.
// Last line: one JSON object. BANKWORKER_DATABASE_URL names the cluster (`make bench` sets it).
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "bench/bench_support.hpp"
#include "crypto/root_key.hpp"
#include "crypto/secret.hpp"
#include "db/keys.hpp"
#include "db/migrate.hpp"
#include "db/pool.hpp"
#include "db/tenant_scope.hpp"
#include "ledger/ledger.hpp"
#include "ledger/reconcile.hpp"
#include "ledger/tenants.hpp"

namespace {

using namespace bankworker;
using steady = std::chrono::steady_clock;

struct options {
  std::size_t payouts = 10'000;
  std::size_t transactions = 1'000'000;
  std::size_t tenants = 100;
  std::size_t trigger_transactions = 4'000;
};

options parse(int argc, char** argv) {
  options parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "reconcile_bench: %s needs a value\n", arg.c_str());
      std::exit(2);
    }
    const char* value = argv[++i];
    if (arg == "--payouts") parsed.payouts = bench::option_number("reconcile_bench", arg, value, 1, 1'000'000);
    else if (arg == "--transactions")
      parsed.transactions = bench::option_number("reconcile_bench", arg, value, 1, 100'000'000);
    else if (arg == "--tenants") parsed.tenants = bench::option_number("reconcile_bench", arg, value, 1, 10'000);
    else if (arg == "--trigger-transactions")
      parsed.trigger_transactions = bench::option_number("reconcile_bench", arg, value, 100, 1'000'000);
    else {
      std::fprintf(stderr, "reconcile_bench: unknown option %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return parsed;
}

std::unique_ptr<db::key_store> random_key_store() {
  crypto::secret key = crypto::secret::filled(crypto::key_bytes, [](unsigned char* out) {
    randombytes_buf(out, crypto::key_bytes);
    return true;
  });
  return std::make_unique<db::key_store>(crypto::root_key_ring(std::make_unique<crypto::file_root_key>(std::move(key))),
                                         db::key_store_settings{});
}

// Bank accounts, mappings, noise, payouts and their deposits, in set-based statements as the
// cluster's admin (the bench measures matching, not loading). Payout i of tenant t is
// po_<t>_<i>, of amount 100000 + 1000·i + t minor units (payouts of a tenant further apart than
// the tolerance, so that only the noise can compete for a deposit), expected on a day in the last 300 days
// (at least 10 ago, so an unmatched one is missing, not pending).
void load(pqxx::connection& admin, const options& o) {
  pqxx::work tx(admin);
  tx.exec("CREATE TEMP TABLE bench_tenants AS SELECT row_number() OVER (ORDER BY tenant_id) AS n, tenant_id"
          " FROM bankworker.tenants");
  tx.exec("INSERT INTO bankworker.connections (tenant_id, connection_id, environment, status)"
          " SELECT tenant_id, gen_random_uuid(), 'sandbox', 'active' FROM bench_tenants");
  tx.exec("INSERT INTO bankworker.accounts (tenant_id, account_id, connection_id, name, type, subtype, currency)"
          " SELECT c.tenant_id, 'acc_checking', c.connection_id, 'Checking', 'depository', 'checking', 'USD'"
          " FROM bankworker.connections c");
  tx.exec("INSERT INTO bankworker.reconcile_accounts (tenant_id, plaid_account_id, ledger_account, tolerance_minor)"
          " SELECT tenant_id, 'acc_checking', 'bank', 100 FROM bench_tenants");
  // The payouts' deposits (19 in 20) and the noise make M together.
  const std::size_t deposits = o.payouts - o.payouts / 20;
  const std::size_t noise = o.transactions > deposits ? o.transactions - deposits : 0;
  const std::string per_tenant_noise = std::to_string((noise + o.tenants - 1) / o.tenants);
  tx.exec("INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
          " currency, date, name, pending)"
          " SELECT c.tenant_id, 'noise_' || g, 'acc_checking', c.connection_id,"
          "        (CASE WHEN random() < 0.3 THEN 1 ELSE -1 END) * (1 + floor(random() * 200000))::bigint, 'USD',"
          "        current_date - floor(random() * 365)::int,"
          "        (ARRAY['COFFEE', 'PAYROLL', 'RENT', 'STRIPE TRANSFER', 'AWS', 'CARD PAYMENT'])[1 + floor(random() * 6)::int],"
          "        false"
          " FROM bankworker.connections c CROSS JOIN generate_series(1, " + per_tenant_noise + ") g");
  const std::string per_tenant_payouts = std::to_string((o.payouts + o.tenants - 1) / o.tenants);
  tx.exec("CREATE TEMP TABLE bench_payouts AS"
          " SELECT b.tenant_id, b.n, i, 'po_' || b.n || '_' || i AS payout_id, 100000 + 1000 * i + b.n AS amount,"
          "        current_date - 10 - (i * 7919 % 290) AS expected_on, gen_random_uuid() AS entry_id"
          " FROM bench_tenants b CROSS JOIN generate_series(1, " + per_tenant_payouts + ") i"
          " WHERE (b.n - 1) * " + per_tenant_payouts + " + i <= " + std::to_string(o.payouts));
  // Entries and their lines in one statement (migration 0049).
  tx.exec("WITH e AS (INSERT INTO bankworker.journal_entries (tenant_id, entry_id, idempotency_key, description,"
          "                   occurred_at, source)"
          " SELECT tenant_id, entry_id, payout_id || ':payout', 'Payout ' || payout_id,"
          "        expected_on::timestamp AT TIME ZONE 'UTC', 'evt_' || payout_id FROM bench_payouts)"
          " INSERT INTO bankworker.journal_lines (tenant_id, entry_id, line_no, account_code, amount_minor, currency)"
          " SELECT tenant_id, entry_id, l.no, l.account, l.sign * amount, 'USD' FROM bench_payouts"
          " CROSS JOIN (VALUES (0, 'bank', 1), (1, 'stripe.clearing', -1)) AS l(no, account, sign)");
  // Deposits: i % 20 = 0 none (missing), = 1 short by 1..99, otherwise exact; 0-3 days late.
  tx.exec("INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id, amount_minor,"
          " currency, date, name, pending)"
          " SELECT p.tenant_id, 'dep_' || p.payout_id, 'acc_checking', c.connection_id,"
          "        p.amount - CASE WHEN p.i % 20 = 1 THEN 1 + p.i % 99 ELSE 0 END, 'USD', p.expected_on + p.i % 4,"
          "        'STRIPE PAYOUT', false"
          " FROM bench_payouts p JOIN bankworker.connections c ON c.tenant_id = p.tenant_id WHERE p.i % 20 <> 0");
  tx.exec("DELETE FROM bankworker.jobs WHERE kind = 'reconcile.match'");
  tx.commit();
  pqxx::nontransaction(admin).exec("VACUUM ANALYZE");
}

struct scans {
  long seq = 0;
  long index = 0;
};

// Scans of bankworker.transactions so far, once the statistics of finished transactions are in.
scans transaction_scans(pqxx::connection& admin) {
  pqxx::nontransaction tx(admin);
  tx.exec("SELECT pg_stat_force_next_flush()");
  tx.exec("SELECT pg_stat_clear_snapshot()");
  const pqxx::row row = tx.exec1(
      "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables"
      " WHERE schemaname = 'bankworker' AND relname = 'transactions'");
  return {row[0].as<long>(), row[1].as<long>()};
}

struct pass {
  double wall_s = 0;
  double db_cpu_s = 0;
  double own_cpu_s = 0;
  std::size_t examined = 0;
  std::size_t changed = 0;
};

pass reconcile_all(db::pool& connections, const db::key_store& keys, const std::vector<core::uuid>& tenants,
                   const std::string& database) {
  pass result;
  const double db_before = bench::database_backends_cpu_s(database);
  const double own_before = bench::process_cpu_s("self");
  const auto started = steady::now();
  for (const core::uuid& tenant : tenants) {
    const ledger::reconcile_report report = db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
      return ledger::reconcile_tenant(tx, keys, tenant, {}, std::nullopt, "bench");
    });
    result.examined += report.payouts_examined;
    result.changed += report.changed;
  }
  result.wall_s = bench::seconds_since(started);
  result.db_cpu_s = bench::database_backends_cpu_s(database) - db_before;
  result.own_cpu_s = bench::process_cpu_s("self") - own_before;
  return result;
}

// Microseconds per unit of `work(block)` run in blocks alternately with the trigger `trigger` on
// `table` enabled and disabled (ALTER TABLE as the admin, between blocks), so that the host's
// drift falls on both arms alike; the median block of each arm.
struct arms {
  double with_us = 0;
  double without_us = 0;
};

template <class Work>
arms interleaved(pqxx::connection& admin, const std::string& table, const std::string& trigger, std::size_t blocks,
                 std::size_t units_per_block, Work work) {
  std::vector<double> with, without;
  for (std::size_t b = 0; b < 2 * blocks; ++b) {
    const bool enabled = b % 2 == 0;
    pqxx::nontransaction(admin).exec("ALTER TABLE bankworker." + table + (enabled ? " ENABLE" : " DISABLE") +
                                     " TRIGGER " + trigger);
    const auto started = steady::now();
    work(b);
    const double us = 1e6 * bench::seconds_since(started) / static_cast<double>(units_per_block);
    (enabled ? with : without).push_back(us);
  }
  pqxx::nontransaction(admin).exec("ALTER TABLE bankworker." + table + " ENABLE TRIGGER " + trigger);
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {median(with), median(without)};
}

// The trigger figures (part 2 of the opening comment).
struct trigger_costs {
  arms entry;  // per posting transaction of one two-line entry
  arms page;   // per bank row, in pages of 500
};

trigger_costs measure_triggers(pqxx::connection& admin, db::pool& connections, const core::uuid& tenant,
                               std::size_t transactions) {
  constexpr std::size_t blocks = 10;
  constexpr std::size_t page_rows = 500;
  trigger_costs costs;
  const std::size_t per_block = std::max<std::size_t>(transactions / blocks / 2, 1);
  costs.entry = interleaved(admin, "journal_entries", "journal_entry_payout", blocks, per_block, [&](std::size_t block) {
    for (std::size_t i = 0; i < per_block; ++i) {
      const std::string key = "ch_bench_" + std::to_string(block) + "_" + std::to_string(i) + ":gross";
      db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
        ledger::post_entry(tx, {key, "Charge", 1'700'000'000, "evt_bench",
                                {{"stripe.clearing", 2000, "USD"}, {"revenue", -2000, "USD"}}});
      });
    }
  });
  const std::size_t pages_per_block = std::max<std::size_t>(transactions / 10 / blocks / 2, 1);
  costs.page = interleaved(
      admin, "transactions", "transactions_reconcile_insert", blocks, pages_per_block * page_rows,
      [&](std::size_t block) {
        for (std::size_t p = 0; p < pages_per_block; ++p) {
          const std::string prefix = "page_" + std::to_string(block) + "_" + std::to_string(p) + "_";
          db::with_tenant(connections, tenant, [&](pqxx::work& tx) {
            tx.exec_params("INSERT INTO bankworker.transactions (tenant_id, transaction_id, account_id, connection_id,"
                           " amount_minor, currency, date, name, pending)"
                           " SELECT bankworker.current_tenant(), $1 || g, 'acc_checking', c.connection_id, -g, 'USD',"
                           " current_date, 'CARD PAYMENT', false"
                           " FROM bankworker.connections c CROSS JOIN generate_series(1, $2) g",
                           prefix, page_rows);
          });
        }
      });
  return costs;
}

double share_pct(const arms& a) { return a.without_us > 0 ? 100.0 * (a.with_us - a.without_us) / a.without_us : 0; }

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) return 1;
  const options o = parse(argc, argv);
  const bench::scratch_database database(bench::cluster_url("reconcile_bench"), "bw_reconcile_bench");
  pqxx::connection admin(database.url());
  db::apply_migrations(admin, db::embedded_migrations());
  db::pool_settings settings;
  settings.connections = 2;
  settings.statement_timeout = std::chrono::minutes(10);
  db::pool connections(crypto::secret::copy_of(database.url()), std::move(settings));
  const auto keys = random_key_store();
  std::vector<core::uuid> tenants;
  for (std::size_t t = 0; t < o.tenants; ++t) {
    tenants.push_back(ledger::create_tenant(connections, *keys, "Bench tenant " + std::to_string(t), "bench"));
  }
  const auto load_started = steady::now();
  load(admin, o);
  const long bank_rows = bench::count_of(admin, "SELECT count(*) FROM bankworker.transactions");
  std::printf("loaded %zu tenants, %ld bank transactions, %ld payouts in %.1f s\n", o.tenants, bank_rows,
              bench::count_of(admin, "SELECT count(*) FROM bankworker.reconcile_payouts"),
              bench::seconds_since(load_started));

  const scans before = transaction_scans(admin);
  const pass first = reconcile_all(connections, *keys, tenants, database.name());
  // Other backends report their statistics at most once a second, or after 10 s idle (PostgreSQL 15).
  std::this_thread::sleep_for(std::chrono::seconds(11));
  const scans after = transaction_scans(admin);
  const pass again = reconcile_all(connections, *keys, tenants, database.name());
  const long matched = bench::count_of(admin, "SELECT count(*) FROM bankworker.reconcile_payouts WHERE status = 'matched'");
  const long short_paid = bench::count_of(admin, "SELECT count(*) FROM bankworker.reconcile_payouts WHERE status = 'short'");
  const long missing = bench::count_of(admin, "SELECT count(*) FROM bankworker.reconcile_payouts WHERE status = 'missing'");
  // Review (ties) or pending: a noise inflow within the tolerance can compete with a payout's deposit.
  const long other = static_cast<long>(first.examined) - matched - short_paid - missing;
  const double per_s = first.wall_s > 0 ? static_cast<double>(first.examined) / first.wall_s : 0;
  std::printf("first pass: %zu payouts decided in %.2f s (%.0f payouts/s): %ld matched, %ld short, %ld missing, "
              "%ld review or pending; %zu decisions written and audited\n",
              first.examined, first.wall_s, per_s, matched, short_paid, missing, other, first.changed);
  std::printf("  database CPU %.1f us per payout, bench process CPU %.1f us per payout\n",
              bench::us_per(first.db_cpu_s, static_cast<long>(first.examined)),
              bench::us_per(first.own_cpu_s, static_cast<long>(first.examined)));
  std::printf("  scans of transactions during matching: %ld sequential, %ld by index\n", after.seq - before.seq,
              after.index - before.index);
  std::printf("second pass (nothing new): %zu payouts in %.2f s, %zu changed\n", again.examined, again.wall_s,
              again.changed);

  const trigger_costs costs = measure_triggers(admin, connections, tenants.front(), o.trigger_transactions);
  std::printf("trigger journal_entry_payout: %.1f us per one-entry posting with it, %.1f without (%+.1f us, %+.1f%%)\n",
              costs.entry.with_us, costs.entry.without_us, costs.entry.with_us - costs.entry.without_us,
              share_pct(costs.entry));
  std::printf("trigger transactions_reconcile_insert: %.2f us per bank row (pages of 500) with it, %.2f without "
              "(%+.2f us, %+.1f%%)\n",
              costs.page.with_us, costs.page.without_us, costs.page.with_us - costs.page.without_us,
              share_pct(costs.page));
  std::printf(
      "{\"bench\":\"reconcile\",\"payouts\":%zu,\"bank_transactions\":%ld,\"tenants\":%zu,\"match_s\":%.3f,"
      "\"payouts_per_s\":%.0f,\"matched\":%ld,\"short\":%ld,\"missing\":%ld,\"db_cpu_us_per_payout\":%.1f,"
      "\"transactions_seq_scans\":%ld,\"rerun_s\":%.3f,\"posting_us_with_trigger\":%.1f,"
      "\"posting_us_without_trigger\":%.1f,\"posting_trigger_pct\":%.1f,\"bank_row_us_with_trigger\":%.2f,"
      "\"bank_row_us_without_trigger\":%.2f,\"bank_row_trigger_pct\":%.1f}\n",
      first.examined, bank_rows, o.tenants, first.wall_s, per_s, matched, short_paid, missing,
      bench::us_per(first.db_cpu_s, static_cast<long>(first.examined)), after.seq - before.seq, again.wall_s,
      costs.entry.with_us, costs.entry.without_us, share_pct(costs.entry), costs.page.with_us, costs.page.without_us,
      share_pct(costs.page));
  // Fails when a payout was not looked at or the candidates came from a scan of the table.
  return first.examined == o.payouts && after.seq == before.seq ? 0 : 1;
}
