// The pure matching rules of ledger/reconcile.hpp: no I/O, driven directly by the table tests.
#include <algorithm>
#include <array>
#include <cctype>
#include <set>

#include "core/assert.hpp"
#include "ledger/reconcile.hpp"

namespace bankworker::ledger {

namespace {

constexpr std::array<std::string_view, 7> status_names = {"pending", "matched", "short", "missing",
                                                           "review",  "conflict", "failed"};
constexpr epoch_day distance_days_max = 60;

bool is_weekday(epoch_day day) noexcept {
  // 1970-01-01 was a Thursday: (day + 4) % 7 is 0 on Sundays. Days before 1970 are negative.
  const int weekday = ((day + 4) % 7 + 7) % 7;
  return weekday != 0 && weekday != 6;
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool mentions(const deposit& candidate, std::string_view needle_upper) {
  if (needle_upper.empty()) return false;
  return upper(candidate.name).find(needle_upper) != std::string::npos ||
         upper(candidate.merchant).find(needle_upper) != std::string::npos;
}

// Why a candidate ranks where it does, and the key it ranks by (smaller is better).
struct ranked {
  const deposit* candidate = nullptr;
  bool exact = false;
  int evidence = 0;
  int distance = 0;  // absolute business days

  auto key() const { return std::tuple(!exact, -evidence, distance); }
};

constexpr std::array<std::string_view, 4> evidence_names = {"none", "STRIPE in the name", "statement descriptor",
                                                            "payout id as trace id"};

std::string describe(const payout_facts& payout, const ranked& r) {
  const std::int64_t difference = r.candidate->amount_minor - payout.amount_minor;
  std::string text = "amount " + std::to_string(r.candidate->amount_minor) + " " + payout.currency +
                     (r.exact ? " exact" : " differs by " + std::to_string(difference) + " (tolerance " +
                                               std::to_string(payout.tolerance_minor) + ")");
  const int signed_distance = business_days_between(payout.expected_day, r.candidate->booked_day);
  text += "; booked " + std::to_string(std::abs(signed_distance)) + " business day(s) " +
          (signed_distance < 0 ? "before" : "after") + " the expected day";
  text += "; descriptor evidence: " + std::string(evidence_names[static_cast<std::size_t>(r.evidence)]);
  if (r.candidate->pending) text += "; bank row pending";
  return text;
}

// The candidates that satisfy every rule, ranked best first.
std::vector<ranked> rank_candidates(const payout_facts& payout, std::span<const deposit> candidates,
                                    const match_rules& rules) {
  std::vector<ranked> fits;
  for (const deposit& d : candidates) {
    if (d.removed || d.currency != payout.currency || d.amount_minor <= 0) continue;
    // Overflow-free |difference|: both are positive here.
    const std::int64_t difference = d.amount_minor - payout.amount_minor;
    const std::int64_t magnitude = difference < 0 ? -difference : difference;
    if (magnitude != 0 && magnitude >= payout.tolerance_minor) continue;
    const int distance = business_days_between(payout.expected_day, d.booked_day);
    if (distance < -rules.business_days_before || distance > rules.business_days_after) continue;
    fits.push_back({&d, magnitude == 0, descriptor_evidence(payout, d), std::abs(distance)});
  }
  std::stable_sort(fits.begin(), fits.end(), [](const ranked& a, const ranked& b) { return a.key() < b.key(); });
  return fits;
}

match_decision without_candidate(const payout_facts& payout, const match_rules& rules, epoch_day today) {
  match_decision decision;
  if (payout.failed) {
    decision.status = payout_status::failed;
    decision.reason = "payout failed at Stripe; no deposit in the bank";
    return decision;
  }
  const bool window_closed = business_days_between(payout.expected_day, today) > rules.business_days_after;
  decision.status = window_closed ? payout_status::missing : payout_status::pending;
  decision.reason = window_closed ? "no deposit of " + std::to_string(payout.amount_minor) + " " + payout.currency +
                                        " within " + std::to_string(rules.business_days_after) +
                                        " business days of the expected day"
                                  : "waiting for the deposit";
  return decision;
}

}  // namespace

std::string_view to_string(payout_status status) noexcept {
  return status_names[static_cast<std::size_t>(status)];
}

std::optional<payout_status> parse_payout_status(std::string_view text) noexcept {
  for (std::size_t i = 0; i < status_names.size(); ++i) {
    if (status_names[i] == text) return static_cast<payout_status>(i);
  }
  return std::nullopt;
}

int business_days_between(epoch_day from, epoch_day to) noexcept {
  const epoch_day span = std::clamp<epoch_day>(to - from, -distance_days_max, distance_days_max);
  int count = 0;
  if (span > 0) {
    for (epoch_day d = from + 1; d <= from + span; ++d) count += is_weekday(d) ? 1 : 0;
  } else {
    for (epoch_day d = from + span; d < from; ++d) count -= is_weekday(d) ? 1 : 0;
  }
  return count;
}

int descriptor_evidence(const payout_facts& payout, const deposit& candidate) {
  if (mentions(candidate, upper(payout.payout_id))) return 3;
  if (mentions(candidate, upper(payout.descriptor))) return 2;
  if (mentions(candidate, "STRIPE")) return 1;
  return 0;
}

match_decision decide_payout(const payout_facts& payout, std::span<const deposit> candidates, const match_rules& rules,
                             epoch_day today) {
  BW_ASSERT(payout.amount_minor > 0);
  const std::vector<ranked> fits = rank_candidates(payout, candidates, rules);
  if (fits.empty()) return without_candidate(payout, rules, today);
  const auto best = fits.front().key();
  const auto tied_end = std::find_if(fits.begin(), fits.end(), [&](const ranked& r) { return r.key() != best; });
  match_decision decision;
  if (tied_end - fits.begin() > 1) {
    decision.status = payout_status::review;
    for (auto it = fits.begin(); it != tied_end && decision.candidates.size() < review_candidates_max; ++it) {
      decision.candidates.push_back(it->candidate->transaction_id);
    }
    std::sort(decision.candidates.begin(), decision.candidates.end());
    decision.reason = std::to_string(tied_end - fits.begin()) + " deposits fit equally well (" + describe(payout, fits.front()) +
                      "); not guessed";
    return decision;
  }
  const ranked& chosen = fits.front();
  decision.transaction_id = chosen.candidate->transaction_id;
  decision.difference_minor = chosen.candidate->amount_minor - payout.amount_minor;
  decision.status = payout.failed  ? payout_status::conflict
                    : chosen.exact ? payout_status::matched
                                   : payout_status::short_paid;
  decision.reason = (payout.failed ? "payout failed at Stripe but the bank shows a deposit: " : "") +
                    describe(payout, chosen);
  return decision;
}

std::vector<match_decision> decide_payouts(std::span<const payout_facts> payouts,
                                           std::span<const std::vector<deposit>> candidates, const match_rules& rules,
                                           epoch_day today) {
  BW_INVARIANT(payouts.size() == candidates.size());
  std::vector<match_decision> decisions(payouts.size());
  std::vector<bool> decided(payouts.size(), false);
  // Round one decides every payout in order; later rounds decide ties again once the deposits other
  // payouts took are out of their candidates. A round that changes nothing ends the loop.
  for (int round = 0; round < reconcile_rounds_max; ++round) {
    std::set<std::string> taken;
    for (std::size_t i = 0; i < payouts.size(); ++i) {
      if (decided[i] && decisions[i].transaction_id) taken.insert(*decisions[i].transaction_id);
    }
    bool changed = false;
    for (std::size_t i = 0; i < payouts.size(); ++i) {
      if (decided[i] && decisions[i].status != payout_status::review) continue;
      std::vector<deposit> free;
      for (const deposit& d : candidates[i]) {
        if (!taken.contains(d.transaction_id)) free.push_back(d);
      }
      match_decision decision = decide_payout(payouts[i], free, rules, today);
      if (decision.transaction_id) taken.insert(*decision.transaction_id);
      if (!decided[i] || decision != decisions[i]) changed = true;
      decisions[i] = std::move(decision);
      decided[i] = true;
    }
    if (!changed) break;
  }
  return decisions;
}

}  // namespace bankworker::ledger
