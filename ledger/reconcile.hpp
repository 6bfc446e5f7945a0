#pragma once
// Reconciliation (issue #19): each payout the ledger posted (an entry keyed po_…:payout, DESIGN.md
// §1) matched to the bank deposit it became, in the bank account mapped to the payout's ledger
// account. The rules are pure (payout and candidate deposits in, a decision with its reason out)
// so table tests drive them; reconcile_tenant applies them to one tenant's rows in the database
// (migration 0034 keeps the rows and enqueues reconcile.match when either side arrives).
//
// The rules:
//   - a candidate is a live (not removed) bank row in a mapped account, of a connection neither
//     revoked nor being revoked (its earlier matches stay; it gives no new ones), in the payout's
//     currency, an inflow within `tolerance_minor` of the payout's amount (strictly less than the
//     tolerance away, or exact), booked from 1 business day before to 4 after the expected day (weekends
//     are not business days; no holiday calendar);
//   - candidates rank by exact amount first, then descriptor evidence (the payout id as trace
//     id 3, the payout's statement descriptor 2, STRIPE 1, in the bank row's name or merchant),
//     then business-day distance. A unique best is the match; equal best candidates are a tie,
//     never guessed: `review`, naming each;
//   - exact amount: `matched`; within tolerance: `short` with the difference (deposit minus payout,
//     negative when short); a payout that failed at Stripe and still found a deposit: `conflict`;
//     failed without one: `failed`; no candidate past the window: `missing`, before: `pending`;
//   - one deposit matches one payout (a unique index says so too). Payouts are decided in order of
//     expected day, then id; a later payout never takes an earlier one's deposit.
//   - a matched bank row removed by the bank moves the match to the row that names it as its
//     pending_transaction_id (pending → posted), or else unmatches to `review` (reason `removed`),
//     which stays until a person acts.
// The ledger knows no Stripe or Plaid JSON: a payout is what the posting left in the ledger, a
// deposit what the bank table holds.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/keys.hpp"
#include "db/statement.hpp"

namespace bankworker::ledger {

enum class payout_status { pending, matched, short_paid, missing, review, conflict, failed };

// The stored names: pending, matched, short, missing, review, conflict, failed.
std::string_view to_string(payout_status status) noexcept;
std::optional<payout_status> parse_payout_status(std::string_view text) noexcept;

// Days since 1970-01-01 (UTC): how dates cross from SQL (`date - date '1970-01-01'`).
using epoch_day = std::int32_t;

struct payout_facts {
  std::string payout_id;
  std::string currency;
  std::int64_t amount_minor = 0;  // positive: money into the bank
  epoch_day expected_day = 0;
  std::string descriptor;         // the statement descriptor, empty when unknown
  bool failed = false;            // Stripe said payout.failed
  std::int64_t tolerance_minor = 0;
};

struct deposit {
  std::string transaction_id;
  std::string currency;
  std::int64_t amount_minor = 0;  // inflow positive
  epoch_day booked_day = 0;
  std::string name;
  std::string merchant;
  bool pending = false;
  bool removed = false;
};

struct match_rules {
  int business_days_before = 1;
  int business_days_after = 4;
};

inline constexpr std::size_t review_candidates_max = 16;  // as the table's CHECK
inline constexpr std::size_t reconcile_batch_payouts_max = 1'000;
inline constexpr std::size_t reconcile_candidates_max = 20'000;  // per batch
inline constexpr int reconcile_rounds_max = 4;  // re-decisions of ties after others took deposits

struct match_decision {
  payout_status status = payout_status::pending;
  std::optional<std::string> transaction_id;
  std::int64_t difference_minor = 0;        // deposit minus payout
  std::vector<std::string> candidates;      // the tied ones, for review
  std::string reason;                       // one line for people: amount, distance, evidence

  friend bool operator==(const match_decision&, const match_decision&) = default;
};

// Weekdays from `from` to `to`: counted over (from, to] going forward and negated over [to, from)
// going back, so a Friday to the next Monday is 1 and a Monday to the Friday before is -1.
// Distances beyond 60 days are clamped (they are outside every window).
int business_days_between(epoch_day from, epoch_day to) noexcept;

// 3: the bank row names the payout id; 2: its descriptor; 1: STRIPE; 0: nothing. Case-insensitive.
int descriptor_evidence(const payout_facts& payout, const deposit& candidate);

// The decision for one payout given every deposit that might be its own (the caller has removed
// those other payouts already hold). `today` decides pending against missing.
match_decision decide_payout(const payout_facts& payout, std::span<const deposit> candidates, const match_rules& rules,
                             epoch_day today);

// Decisions for payouts in the given order (expected day, then id), each candidate deposit going
// to at most one payout: a deposit taken by an earlier decision is not a later one's candidate, and
// ties are decided again once the deposits others took are out (at most reconcile_rounds_max).
// candidates[i] are payouts[i]'s.
std::vector<match_decision> decide_payouts(std::span<const payout_facts> payouts,
                                           std::span<const std::vector<deposit>> candidates, const match_rules& rules,
                                           epoch_day today);

// --- the database side ------------------------------------------------------------------------

// Maps a bank account (a Plaid account id the tenant synced) to a ledger asset account, with the
// tolerance for `short`; replaces an earlier mapping of that bank account. Audited
// (reconcile.account_mapped) and followed by a reconcile.match job. Throws std::invalid_argument
// naming what is wrong (unknown bank account, not an asset account, tolerance out of range).
void map_bank_account(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                      std::string_view plaid_account, std::string_view ledger_account, std::int64_t tolerance_minor,
                      std::string_view actor);

struct reconcile_report {
  std::size_t payouts_examined = 0;
  std::size_t changed = 0;    // rows whose decision changed (each audited)
  std::size_t relinked = 0;   // pending → posted
  std::size_t unmatched = 0;  // matched rows removed by the bank, now in review
};

// One run over the tenant of `tx`: relinks or unmatches removed bank rows, turns matched payouts
// that failed into conflicts, then decides every open payout (pending, tie, missing in the last
// 30 days), in batches of reconcile_batch_payouts_max. Serialised per tenant by a transaction
// advisory lock; re-running with nothing new changes nothing. `today_sql` is a date for tests,
// empty for the database's clock.
reconcile_report reconcile_tenant(pqxx::work& tx, const db::key_store& keys, const core::uuid& tenant,
                                  const match_rules& rules, const std::optional<std::string>& today_sql,
                                  std::string_view actor);

struct payout_row {
  std::string tenant_id;
  std::string payout_id;
  std::string status;
  std::string currency;
  std::int64_t amount_minor = 0;
  std::string expected_on;
  std::string transaction_id;  // empty when none
  std::int64_t difference_minor = 0;
  std::vector<std::string> candidates;
  std::string reason;
};

inline constexpr std::size_t payout_list_rows_max = 10'000;

// The tenant's payouts, optionally of one status, newest expected first, at most `limit`.
std::vector<payout_row> list_payouts(pqxx::work& tx, const std::optional<payout_status>& status, std::size_t limit);

// The scheduled pass: a reconcile.match job for every tenant with a pending payout whose window
// may have closed. Returns how many tenants got one. `now_sql` as the scheduler's.
std::size_t schedule_overdue_payouts(pqxx::work& tx, const std::optional<std::string>& now_sql);

// Payouts by open status across tenants, for the database gauges: (status text, payouts bigint).
inline constexpr const char* reconcile_gauges_sql = "SELECT status, payouts FROM bankworker.reconcile_gauges()";
// The statuses the gauge reports (settled ones, matched and failed, are not).
inline constexpr std::string_view open_payout_statuses[] = {"pending", "missing", "review", "short", "conflict"};

}  // namespace bankworker::ledger
