#pragma once
// Stripe events → journal entries (pure, table-tested, fuzzable).
//
// Several events describe the same money (charge.succeeded and payment_intent.succeeded; refunds
// seen through charge.refunded and refund.created), so every entry is keyed by the money object
// and its leg — ch_…:gross, ch_…:fee, re_…:refund, po_…:payout — never by the event: whichever
// event arrives first posts, the others find the entry already there. Events that reverse money
// (refund.failed, payout.failed) plan both the original leg and its reversal, so the ledger ends
// the same whatever order Stripe delivers them in.
//
// Amounts: Stripe sends integers in its own smallest unit per currency, which is not always
// ISO 4217's (ISK is two-decimal at Stripe, zero-decimal in ISO). Conversion to our minor units
// is exact or refused.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "core/currency.hpp"
#include "ledger/ledger.hpp"

namespace bankworker::stripe {

inline constexpr std::size_t event_bytes_max = 1 << 20;
inline constexpr std::size_t stripe_id_bytes_max = 255;
inline constexpr std::size_t listed_refunds_max = 100;

// Stripe's decimals for a (lowercase or uppercase) currency code: its zero-decimal list,
// its three-decimal list, ISK as two, two otherwise.
int stripe_exponent(std::string_view currency) noexcept;

struct money_result {
  bool ok = false;
  std::int64_t minor = 0;
  std::string currency;  // uppercase ISO code
  std::string error;
};

// A Stripe amount in Stripe's unit → our minor units for the currency's exponent in `currencies`.
money_result to_minor_units(std::int64_t stripe_amount, std::string_view stripe_currency,
                            const core::currency_table& currencies);

enum class plan_status {
  post,    // entries to post (possibly none left to add, if all were posted before)
  ignore,  // not a money event, or no money moved: store the event as ignored, with the reason
  fail,    // the event's money object is missing or inconsistent: fail the job, post nothing
};

// A balance transaction (GET /v1/balance_transactions/{id}, or embedded in the object that moved
// the money): what the Stripe balance really did, in the settlement currency.
struct balance_transaction {
  std::string id;
  std::int64_t amount = 0;  // Stripe units of `currency`, signed: negative when money left the balance
  std::int64_t fee = 0;     // signed too: a dispute fee handed back on reinstatement is negative
  std::int64_t net = 0;     // amount - fee, checked
  std::string currency;     // lowercase, as Stripe sends it
  std::optional<std::string> exchange_rate;  // as text, for the description only: never used to compute
};

// Something the planner needs from the Stripe API before a leg's settlement can be booked.
// `path` is relative to the API base URL and passes is_relative_api_path (thin_event.hpp); the
// answer must be a JSON object whose `id` is `id` and `object` is `object`.
struct fetch_request {
  std::string object;  // balance_transaction, charge, refund, dispute, fee_refund, payout
  std::string id;      // txn_…, ch_…, re_…, dp_…, fr_…, po_…
  std::string path;    // /v1/balance_transactions/txn_…, /v1/charges/ch_…, …

  friend bool operator==(const fetch_request&, const fetch_request&) = default;
};

// One movement of the Stripe balance (DESIGN.md §1: every such leg is booked from its balance
// transaction). Its presentment entry (`<object_id>:<name>`: ch_…:gross, re_…:refund, …) moves
// the object's own amount between stripe.clearing and `counter_account`; once `settlement` is
// known, `<object_id>:<fx>` converts it into the settlement currency (only when the currencies
// differ; `fx` for a charge's gross, `<name>_fx` otherwise) and `<object_id>:<fee>` books the
// balance transaction's fee (`fee`, `<name>_fee`). So stripe.clearing per currency ends equal to
// the sum of the balance transactions' `net`, and a leg posted before its settlement was known is
// completed later by the same keys, never posted twice.
struct settlement_leg {
  std::string object_id;        // ch_…, re_…, dp_…, fee_…, fr_…, po_…
  std::string name;             // gross, refund, refund_failed, withdrawn, reinstated, application_fee, …
  int direction = 1;            // +1: money into the Stripe balance; -1: out of it
  std::int64_t amount_minor = 0;  // presentment amount, positive, our minor units
  std::string currency;           // presentment currency, uppercase
  std::string counter_account;    // revenue, refunds, disputes, application_fees, bank
  std::string fee_account;        // stripe.fees or dispute.fees
  std::string description;        // of the presentment entry: "Refund re_…"
  std::int64_t occurred_at_s = 0;
  std::string source;             // the event id
  std::optional<balance_transaction> settlement;  // known: booked now
  std::optional<fetch_request> fetch;             // unknown: what to fetch to learn it
  // Carried by the presentment entry only (ledger::entry::metadata): a payout's arrival_date and
  // statement_descriptor, which reconciliation matches the bank deposit by.
  std::vector<std::pair<std::string, std::string>> metadata{};  // {}: initialisers may leave it out
};

// The keys of a leg's settlement entries: its fee (ch_…:fee, re_…:refund_fee, …) and its
// conversion (ch_…:fx, re_…:refund_fx, …).
struct settlement_keys {
  std::string fee;
  std::string fx;
};
settlement_keys settlement_keys_of(const settlement_leg& leg);

struct posting_plan {
  plan_status status = plan_status::fail;
  std::string reason;  // why ignored or failed; for post, a short summary
  std::string event_id;
  std::string event_type;
  std::optional<std::string> account;  // Connect account the event belongs to
  // Everything postable now: every leg's presentment entry, and the conversion and fee entries of
  // every leg whose settlement is known. Always derived from `legs` (plus entries that move no
  // Stripe balance, none today).
  std::vector<ledger::entry> entries;
  std::vector<settlement_leg> legs;
  // What must still be fetched, one per leg awaiting settlement (in leg order, no duplicates).
  std::vector<fetch_request> to_fetch;
  // Compatibility with the charge-only fee look-up (stripe_api_jobs::look_up_fees): set only when
  // the plan's charge leg waits for exactly this balance transaction.
  std::optional<std::string> balance_transaction_id;
  std::optional<std::string> charge_id;

  // Some leg's settlement is unknown: its presentment side is in `entries`, its conversion and
  // fee are not. Never a guessed rate: the caller fetches `to_fetch`, or, with no API key, posts
  // `entries` and records the event as awaiting settlement for a later completion.
  bool awaiting_settlement() const noexcept { return !to_fetch.empty(); }
};

// A posted plan's legs by what is known of their settlement, for the awaiting-settlement marks on
// the event rows (migration 0043). A leg is named by its presentment entry's key (ch_…:gross).
struct awaited_leg {
  std::string leg_key;   // ch_…:gross
  settlement_keys keys;  // the entries that will settle it: ch_…:fee, ch_…:fx
};
struct settlement_summary {
  std::vector<std::string> settled;  // legs whose balance transaction the plan booked
  std::vector<awaited_leg> awaited;  // legs posted on their presentment side only
};
// At most this many legs per plan (a charge's listed refunds, each with its failure, and room).
inline constexpr std::size_t plan_legs_max = 4 * listed_refunds_max;
settlement_summary settlement_summary_of(const posting_plan& plan);

// An answer to one fetch_request: the request and the 2xx body as received.
struct fetched_object {
  fetch_request request;
  std::string body;
};

// How many fetch rounds a plan can need: a charge named only by its id (payment_intent.succeeded,
// API 2022-11-15 on) is fetched, and its balance transaction, if not expanded, in a second round.
inline constexpr std::size_t fetch_rounds_max = 2;
inline constexpr std::size_t fetched_objects_max = 2 * listed_refunds_max;

// The contract for the I/O side (the stripe.post job):
//
//   posting_plan plan = plan_postings(parser, event_json, currencies);       // pure
//   for (round = 0; plan.status == post && plan.awaiting_settlement() && key && round < fetch_rounds_max; ++round) {
//     fetched = GET each plan.to_fetch[i].path (no transaction open)         // I/O
//     plan = complete_plan(parser, std::move(plan), fetched, currencies);     // pure
//   }
//   post plan.entries in one transaction; if plan.awaiting_settlement(), record the event as
//   awaiting settlement (the recovery job re-plans the stored event and completes it later).
//
// Failures of a fetch are the API's usual outcomes (retry, needs user action, failed); posting the
// presentment side without the settlement is for "no key configured", not for a failed fetch.
// Re-planning an event whose entries were posted before gives the same keys and lines, so
// completion after a partial posting adds only the missing conversion and fee entries.
posting_plan plan_postings(simdjson::dom::parser& parser, std::string_view event_json,
                           const core::currency_table& currencies);

// Pure: settles every leg of `plan` that an answer in `fetched` resolves (matched by object and
// id), lists what is still missing (a fetched charge whose balance transaction is only an id asks
// for it next), and rebuilds `entries`. An answer that contradicts its leg (another id, another
// object, a balance transaction moving money the other way, or a different amount in the same
// currency) fails the plan with the reason and no entries. Answers nobody asked for are ignored.
// A plan that is not `post` is returned unchanged.
posting_plan complete_plan(simdjson::dom::parser& parser, posting_plan plan, std::span<const fetched_object> fetched,
                           const core::currency_table& currencies);

// Parses a GET /v1/balance_transactions/{id} body; nothing when malformed (`error` says why).
std::optional<balance_transaction> parse_balance_transaction(simdjson::dom::parser& parser, std::string_view json,
                                                             std::string& error);

// The fee leg (ch_…:fee) and, when the charge settled in another currency, the conversion leg
// (ch_…:fx) for a charge whose gross entry is `gross` (as planned by plan_postings). Kept for the
// charge-only fee look-up; the same entries complete_plan makes for a charge leg.
posting_plan fee_entries(const ledger::entry& gross, const std::string& charge_id, const balance_transaction& bt,
                         const core::currency_table& currencies);

// The id of the money object an event is about, which chooses its posting lane (inbox.hpp): a
// charge's own id; the charge a refund, dispute, application fee, invoice or payment intent names
// (`charge`, or `latest_charge`, as an id or expanded); else the object's id (a payout). Empty for
// an event without data.object (a thin event). A view into `event`'s parser.
std::string_view money_object_of(simdjson::dom::element event);

}  // namespace bankworker::stripe
