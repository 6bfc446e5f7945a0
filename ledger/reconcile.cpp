// The database side of reconciliation (ledger/reconcile.hpp): reading payouts and their candidate
// deposits in batches, writing changed decisions with an audit row each, bank account mappings,
// listing. Every statement runs in the caller's tenant-scoped transaction; the rules themselves
// are in reconcile_rules.cpp.
#include <limits>
#include <map>
#include <stdexcept>

#include "core/assert.hpp"
#include "core/json_text.hpp"
#include "db/audit.hpp"
#include "db/sql_array.hpp"
#include "ledger/reconcile.hpp"

namespace bankworker::ledger {

namespace {

using db::statement;
using db::exec_statement;
using db::exec_statement1;

// Serialises runs of one tenant (the job and `reconcile run` may overlap); released at commit.
constexpr statement lock_tenant{"reconcile_lock_tenant",
                                "SELECT pg_advisory_xact_lock(hashtextextended('bankworker.reconcile:' || $1, 0))"};
constexpr statement today_of{"reconcile_today",
                             "SELECT ((coalesce($1::timestamptz, now()) AT TIME ZONE 'UTC')::date - date '1970-01-01')::int"};

// Matched rows whose bank row was removed, with the live row that names it as its pending one.
// Bounded to payouts expected in the last 90 days (reconcile_payouts_matched: its predicate is the
// status, which the table's CHECK ties to transaction_id IS NOT NULL; see migration 0041).
constexpr statement removed_matches{
    "reconcile_removed_matches",
    "SELECT p.payout_id, p.transaction_id, n.transaction_id, n.amount_minor"
    " FROM bankworker.reconcile_payouts p"
    " JOIN bankworker.transactions t ON t.tenant_id = p.tenant_id AND t.transaction_id = p.transaction_id"
    " LEFT JOIN LATERAL (SELECT n.transaction_id, n.amount_minor FROM bankworker.transactions n"
    "   WHERE n.tenant_id = p.tenant_id AND n.pending_transaction_id = p.transaction_id AND n.removed_at IS NULL"
    "   ORDER BY n.transaction_id LIMIT 1) n ON true"
    " WHERE p.tenant_id = bankworker.current_tenant() AND p.expected_on >= $1::int + date '1970-01-01' - 90"
    "   AND p.status IN ('matched', 'short', 'conflict') AND p.transaction_id IS NOT NULL"
    "   AND t.removed_at IS NOT NULL"
    " ORDER BY p.payout_id LIMIT 1000"};
constexpr statement relink_match{
    "reconcile_relink",
    "UPDATE bankworker.reconcile_payouts SET transaction_id = $2,"
    " difference_minor = $3::bigint - amount_minor, decided_at = now(),"
    " status = CASE WHEN status = 'conflict' THEN 'conflict' WHEN $3::bigint = amount_minor THEN 'matched' ELSE 'short' END,"
    " reason = left(reason || '; pending bank row ' || $4 || ' posted as ' || $2, 1024)"
    " WHERE tenant_id = bankworker.current_tenant() AND payout_id = $1"
    " RETURNING status"};
constexpr statement unmatch_removed{
    "reconcile_unmatch_removed",
    "UPDATE bankworker.reconcile_payouts SET status = 'review', review_reason = 'removed', transaction_id = NULL,"
    " difference_minor = 0, candidates = ARRAY[$2::text], decided_at = now(),"
    " reason = 'the matched bank row ' || $2 || ' was removed by the bank'"
    " WHERE tenant_id = bankworker.current_tenant() AND payout_id = $1"};
// Matched payouts that Stripe later said failed.
constexpr statement failed_matches{
    "reconcile_failed_matches",
    "UPDATE bankworker.reconcile_payouts SET status = 'conflict', decided_at = now(),"
    " reason = left('payout failed at Stripe but the bank shows a deposit: ' || reason, 1024)"
    " WHERE tenant_id = bankworker.current_tenant() AND failed AND status IN ('matched', 'short')"
    " RETURNING payout_id, transaction_id"};

// Open payouts after the (expected_on, payout_id) cursor, with the tolerance of their account.
constexpr statement open_payouts{
    "reconcile_open_payouts",
    "SELECT p.payout_id, p.currency, p.amount_minor, p.expected_on - date '1970-01-01', coalesce(p.descriptor, ''),"
    "       p.failed, coalesce((SELECT max(m.tolerance_minor) FROM bankworker.reconcile_accounts m"
    "                            WHERE m.tenant_id = p.tenant_id AND m.ledger_account = p.ledger_account), 0),"
    "       p.status, coalesce(p.transaction_id, ''), p.difference_minor, p.candidates"
    " FROM bankworker.reconcile_payouts p"
    " WHERE p.tenant_id = bankworker.current_tenant()"
    "   AND (p.status = 'pending' OR (p.status = 'review' AND p.review_reason = 'tie')"
    "        OR (p.status = 'missing' AND p.expected_on >= $1::int + date '1970-01-01' - 30))"
    "   AND (p.expected_on - date '1970-01-01', p.payout_id) > ($2::int, $3::text)"
    " ORDER BY p.expected_on, p.payout_id LIMIT $4"};
// Every live bank row that may be one of the payouts' deposits and that no other payout holds:
// the calendar window is a superset of the business-day one (the rules decide exactly). Each
// payout's bounds are computed once, in `w`, so that the join on transactions compares columns
// with plain (leakproof) operators: row-level security on transactions keeps a clause with a
// non-leakproof function such as `date - integer` out of the index scan, and it then ran as a
// join filter over every bank row of the tenant for each payout, quadratic in the tenant's size
// (760 ms for 100 payouts against 10,000 rows under the generic plan of the prepared statement).
// MATERIALIZED keeps the planner from folding the expressions back into the join. The LATERAL
// subquery (a LIMIT keeps it from being flattened) makes the search one index probe per payout:
// with one large tenant the planner otherwise guessed that a hash join over all its bank rows,
// filtering each against every payout of the batch, was cheaper (800,000 comparisons for 20
// payouts against 40,000 rows). Its LIMIT is the batch cap, so a payout with too many candidates
// still fails the batch below. transactions_account_date_amount checks the window and the amount
// in the index, so the heap is read for the one or two rows that qualify. current_tenant() runs
// once, as an InitPlan, not once per row. A row of a connection the user revoked (or is revoking)
// stays in the books, and a match made on it stays, but it is no new payout's deposit: one
// primary-key probe of connections for each row that qualified.
constexpr statement candidate_deposits{
    "reconcile_candidates",
    "WITH w AS MATERIALIZED ("
    "  SELECT p.payout_id, p.currency, m.plaid_account_id,"
    "         p.expected_on - $2::int AS first_day, p.expected_on + $3::int AS last_day,"
    "         p.amount_minor - greatest(m.tolerance_minor - 1, 0) AS least_minor,"
    "         p.amount_minor + greatest(m.tolerance_minor - 1, 0) AS most_minor"
    "  FROM bankworker.reconcile_payouts p"
    "  JOIN bankworker.reconcile_accounts m ON m.tenant_id = p.tenant_id AND m.ledger_account = p.ledger_account"
    "  WHERE p.tenant_id = (SELECT bankworker.current_tenant()) AND p.payout_id = ANY($1::text[]))"
    " SELECT w.payout_id, c.transaction_id, c.currency, c.amount_minor, c.date - date '1970-01-01', c.name,"
    "        coalesce(c.merchant_name, ''), c.pending"
    " FROM w CROSS JOIN LATERAL ("
    "  SELECT t.transaction_id, t.currency, t.amount_minor, t.date, t.name, t.merchant_name, t.pending"
    "  FROM bankworker.transactions t"
    "  WHERE t.tenant_id = (SELECT bankworker.current_tenant())"
    "    AND t.account_id = w.plaid_account_id AND t.date BETWEEN w.first_day AND w.last_day"
    "    AND t.amount_minor BETWEEN w.least_minor AND w.most_minor"
    "    AND t.currency = w.currency AND t.removed_at IS NULL"
    "    AND NOT EXISTS (SELECT 1 FROM bankworker.connections k WHERE k.tenant_id = t.tenant_id"
    "                     AND k.connection_id = t.connection_id AND k.status IN ('revoking', 'revoked'))"
    "    AND NOT EXISTS (SELECT 1 FROM bankworker.reconcile_payouts o WHERE o.tenant_id = t.tenant_id"
    "                     AND o.transaction_id = t.transaction_id AND o.payout_id <> w.payout_id)"
    "  LIMIT $4) c"
    " ORDER BY w.payout_id, c.transaction_id LIMIT $4"};
constexpr statement store_decision{
    "reconcile_store_decision",
    "UPDATE bankworker.reconcile_payouts SET status = $2, transaction_id = nullif($3, ''), difference_minor = $4,"
    " candidates = $5::text[], review_reason = CASE WHEN $2 = 'review' THEN 'tie' END, reason = left($6, 1024),"
    " decided_at = now()"
    " WHERE tenant_id = bankworker.current_tenant() AND payout_id = $1"};

constexpr statement bank_account_known{
    "reconcile_bank_account_known",
    "SELECT (SELECT count(*) FROM bankworker.accounts WHERE account_id = $1),"
    "       (SELECT kind FROM bankworker.ledger_accounts WHERE code = $2)"};
constexpr statement upsert_mapping{
    "reconcile_upsert_mapping",
    "INSERT INTO bankworker.reconcile_accounts (tenant_id, plaid_account_id, ledger_account, tolerance_minor)"
    " VALUES (bankworker.current_tenant(), $1, $2, $3)"
    " ON CONFLICT (tenant_id, plaid_account_id) DO UPDATE"
    " SET ledger_account = EXCLUDED.ledger_account, tolerance_minor = EXCLUDED.tolerance_minor, mapped_at = now()"};
constexpr statement enqueue_match{"reconcile_enqueue",
                                  "SELECT bankworker.enqueue_reconcile(ARRAY[bankworker.current_tenant()])"};

constexpr statement list_rows{
    "reconcile_list",
    "SELECT tenant_id::text, payout_id, status, currency, amount_minor, expected_on::text,"
    "       coalesce(transaction_id, ''), difference_minor, candidates, reason"
    " FROM bankworker.reconcile_payouts WHERE tenant_id = bankworker.current_tenant()"
    "   AND ($1::text IS NULL OR status = $1)"
    " ORDER BY expected_on DESC, payout_id LIMIT $2"};
constexpr statement overdue{"reconcile_schedule_overdue",
                            "SELECT bankworker.schedule_reconcile_overdue($1::timestamptz, 10000)"};

constexpr std::int64_t tolerance_minor_max = 1'000'000'000;  // as the table's CHECK

std::vector<std::string> text_array(const pqxx::field& field) {
  std::vector<std::string> out;
  auto parser = field.as_array();
  for (auto item = parser.get_next(); item.first != pqxx::array_parser::done; item = parser.get_next()) {
    if (item.first == pqxx::array_parser::string_value) out.push_back(item.second);
  }
  return out;
}

std::string text_array_literal(const std::vector<std::string>& items) {
  db::array_text array;
  for (const std::string& item : items) array.add(item);
  return std::string(array.finish());
}

// Calendar days that hold `business` business days: two weekend days per started week.
int calendar_days_for(int business) { return business + 2 * ((business + 4) / 5); }

void audit_decision(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant, std::string_view actor,
                    std::string_view payout_id, std::string_view status, std::string_view transaction_id,
                    std::int64_t difference_minor) {
  std::string details = "{\"transaction_id\":";
  core::append_json_string(transaction_id, details);
  details += ",\"difference_minor\":" + std::to_string(difference_minor) + "}";
  const std::string action = "reconcile." + std::string(status);
  db::append_audit(tx, keys,
                   {.tenant = tenant, .actor = actor, .action = action, .subject = payout_id, .details = details});
}

// Removed bank rows: pending → posted keeps the match, anything else goes back to review.
void settle_removed_rows(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant, epoch_day today,
                         std::string_view actor, reconcile_report& report) {
  for (const auto& row : exec_statement(tx, removed_matches, today)) {
    const std::string payout_id = row[0].as<std::string>();
    const std::string old_id = row[1].as<std::string>();
    if (!row[2].is_null()) {
      const std::string posted_id = row[2].as<std::string>();
      const pqxx::row status = exec_statement1(tx, relink_match, payout_id, posted_id, row[3].as<std::int64_t>(), old_id);
      audit_decision(tx, keys, tenant, actor, payout_id, status[0].as<std::string>(), posted_id, 0);
      ++report.relinked;
    } else {
      exec_statement(tx, unmatch_removed, payout_id, old_id);
      audit_decision(tx, keys, tenant, actor, payout_id, "review", "", 0);
      ++report.unmatched;
    }
    ++report.changed;
  }
  for (const auto& row : exec_statement(tx, failed_matches)) {
    audit_decision(tx, keys, tenant, actor, row[0].as<std::string>(), "conflict", row[1].as<std::string>(), 0);
    ++report.changed;
  }
}

struct open_batch {
  std::vector<payout_facts> payouts;
  std::vector<match_decision> stored;  // what the row holds now
};

open_batch read_open_payouts(pqxx::work& tx, epoch_day today, epoch_day after_day, const std::string& after_id) {
  open_batch batch;
  for (const auto& row : exec_statement(tx, open_payouts, today, after_day, after_id, reconcile_batch_payouts_max)) {
    batch.payouts.push_back({.payout_id = row[0].as<std::string>(),
                             .currency = row[1].as<std::string>(),
                             .amount_minor = row[2].as<std::int64_t>(),
                             .expected_day = row[3].as<epoch_day>(),
                             .descriptor = row[4].as<std::string>(),
                             .failed = row[5].as<bool>(),
                             .tolerance_minor = row[6].as<std::int64_t>()});
    match_decision stored;
    const auto status = parse_payout_status(row[7].as<std::string>());
    BW_INVARIANT(status.has_value());
    stored.status = *status;
    if (!row[8].as<std::string>().empty()) stored.transaction_id = row[8].as<std::string>();
    stored.difference_minor = row[9].as<std::int64_t>();
    stored.candidates = text_array(row[10]);
    batch.stored.push_back(std::move(stored));
  }
  return batch;
}

std::vector<std::vector<deposit>> read_candidates(pqxx::work& tx, const std::vector<payout_facts>& payouts,
                                                  const match_rules& rules) {
  std::map<std::string, std::size_t> index;
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < payouts.size(); ++i) {
    index.emplace(payouts[i].payout_id, i);
    ids.push_back(payouts[i].payout_id);
  }
  std::vector<std::vector<deposit>> out(payouts.size());
  const pqxx::result rows =
      exec_statement(tx, candidate_deposits, text_array_literal(ids), calendar_days_for(rules.business_days_before),
                     calendar_days_for(rules.business_days_after), reconcile_candidates_max);
  // A batch at the cap may be missing candidates: deciding on part of them could guess a match.
  if (rows.size() >= reconcile_candidates_max) {
    throw std::runtime_error("reconcile: candidate deposits of one batch reached reconcile_candidates_max");
  }
  for (const auto& row : rows) {
    out[index.at(row[0].as<std::string>())].push_back({.transaction_id = row[1].as<std::string>(),
                                                       .currency = row[2].as<std::string>(),
                                                       .amount_minor = row[3].as<std::int64_t>(),
                                                       .booked_day = row[4].as<epoch_day>(),
                                                       .name = row[5].as<std::string>(),
                                                       .merchant = row[6].as<std::string>(),
                                                       .pending = row[7].as<bool>()});
  }
  return out;
}

bool same_outcome(const match_decision& a, const match_decision& b) {
  return a.status == b.status && a.transaction_id == b.transaction_id && a.difference_minor == b.difference_minor &&
         a.candidates == b.candidates;
}

}  // namespace

void map_bank_account(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                      std::string_view plaid_account, std::string_view ledger_account, std::int64_t tolerance_minor,
                      std::string_view actor) {
  if (tolerance_minor < 0 || tolerance_minor > tolerance_minor_max) {
    throw std::invalid_argument("tolerance must be 0.." + std::to_string(tolerance_minor_max) + " minor units");
  }
  const pqxx::row known = exec_statement1(tx, bank_account_known, std::string(plaid_account), std::string(ledger_account));
  if (known[0].as<std::int64_t>() == 0) {
    throw std::invalid_argument("no bank account " + std::string(plaid_account) + " synced for this tenant");
  }
  if (known[1].is_null() || known[1].as<std::string>() != "asset" || ledger_account == "stripe.clearing") {
    throw std::invalid_argument("ledger account " + std::string(ledger_account) + " is not a bank (asset) account");
  }
  exec_statement(tx, upsert_mapping, std::string(plaid_account), std::string(ledger_account), tolerance_minor);
  std::string details = "{\"ledger_account\":";
  core::append_json_string(ledger_account, details);
  details += ",\"tolerance_minor\":" + std::to_string(tolerance_minor) + "}";
  db::append_audit(tx, keys, {.tenant = tenant, .actor = actor, .action = "reconcile.account_mapped",
                              .subject = plaid_account, .details = details});
  exec_statement(tx, enqueue_match);
}

reconcile_report reconcile_tenant(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                                  const match_rules& rules, const std::optional<std::string>& today_sql,
                                  std::string_view actor) {
  exec_statement(tx, lock_tenant, tenant.to_string());
  const auto today = exec_statement1(tx, today_of, today_sql)[0].as<epoch_day>();
  reconcile_report report;
  settle_removed_rows(tx, keys, tenant, today, actor, report);
  epoch_day after_day = std::numeric_limits<epoch_day>::min();
  std::string after_id;
  for (;;) {
    const open_batch batch = read_open_payouts(tx, today, after_day, after_id);
    if (batch.payouts.empty()) break;
    const std::vector<std::vector<deposit>> candidates = read_candidates(tx, batch.payouts, rules);
    const std::vector<match_decision> decisions = decide_payouts(batch.payouts, candidates, rules, today);
    for (std::size_t i = 0; i < decisions.size(); ++i) {
      const match_decision& d = decisions[i];
      if (same_outcome(d, batch.stored[i])) continue;
      const std::string transaction_id = d.transaction_id.value_or("");
      exec_statement(tx, store_decision, batch.payouts[i].payout_id, std::string(to_string(d.status)), transaction_id,
                     d.difference_minor, text_array_literal(d.candidates), d.reason);
      audit_decision(tx, keys, tenant, actor, batch.payouts[i].payout_id, to_string(d.status), transaction_id,
                     d.difference_minor);
      ++report.changed;
    }
    report.payouts_examined += batch.payouts.size();
    if (batch.payouts.size() < reconcile_batch_payouts_max) break;
    after_day = batch.payouts.back().expected_day;
    after_id = batch.payouts.back().payout_id;
  }
  return report;
}

std::vector<payout_row> list_payouts(pqxx::work& tx, const std::optional<payout_status>& status, std::size_t limit) {
  const std::optional<std::string> status_text =
      status ? std::optional<std::string>(std::string(to_string(*status))) : std::nullopt;
  std::vector<payout_row> out;
  for (const auto& row : exec_statement(tx, list_rows, status_text, std::min(limit, payout_list_rows_max))) {
    out.push_back({.tenant_id = row[0].as<std::string>(),
                   .payout_id = row[1].as<std::string>(),
                   .status = row[2].as<std::string>(),
                   .currency = row[3].as<std::string>(),
                   .amount_minor = row[4].as<std::int64_t>(),
                   .expected_on = row[5].as<std::string>(),
                   .transaction_id = row[6].as<std::string>(),
                   .difference_minor = row[7].as<std::int64_t>(),
                   .candidates = text_array(row[8]),
                   .reason = row[9].as<std::string>()});
  }
  return out;
}

std::size_t schedule_overdue_payouts(pqxx::work& tx, const std::optional<std::string>& now_sql) {
  return exec_statement1(tx, overdue, now_sql)[0].as<std::size_t>();
}

}  // namespace bankworker::ledger
