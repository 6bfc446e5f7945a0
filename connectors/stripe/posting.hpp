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

struct posting_plan {
  plan_status status = plan_status::fail;
  std::string reason;  // why ignored or failed; for post, a short summary
  std::string event_id;
  std::string event_type;
  std::optional<std::string> account;  // Connect account the event belongs to
  std::vector<ledger::entry> entries;
  // For a successful charge: its balance transaction id, which the handler fetches
  // (GET /v1/balance_transactions/{id}) to post fees and currency conversion with fee_entries().
  std::optional<std::string> balance_transaction_id;
  std::optional<std::string> charge_id;
};

posting_plan plan_postings(simdjson::dom::parser& parser, std::string_view event_json,
                           const core::currency_table& currencies);

struct balance_transaction {
  std::string id;
  std::int64_t amount = 0;  // Stripe units of `currency`
  std::int64_t fee = 0;
  std::int64_t net = 0;
  std::string currency;  // lowercase, as Stripe sends it
};

// Parses a GET /v1/balance_transactions/{id} body; nothing when malformed (`error` says why).
std::optional<balance_transaction> parse_balance_transaction(simdjson::dom::parser& parser, std::string_view json,
                                                             std::string& error);

// The fee leg (ch_…:fee) and, when the charge settled in another currency, the conversion leg
// (ch_…:fx) for a charge whose gross entry is `gross` (as planned by plan_postings).
posting_plan fee_entries(const ledger::entry& gross, const std::string& charge_id, const balance_transaction& bt,
                         const core::currency_table& currencies);

}  // namespace bankworker::stripe
