#include "connectors/stripe/posting.hpp"

#include <algorithm>
#include <array>
#include <cctype>

#include "core/assert.hpp"

namespace bankworker::stripe {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

// Stripe's published currency decimals (its "zero-decimal" and "three-decimal" lists).
constexpr std::array<std::string_view, 16> zero_decimal = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
                                                           "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"};
constexpr std::array<std::string_view, 5> three_decimal = {"BHD", "JOD", "KWD", "OMR", "TND"};

// Thrown inside planning only; becomes plan_status::fail with the reason at the boundary.
struct bad_event {
  std::string reason;
};

[[noreturn]] void fail(std::string reason) { throw bad_event{std::move(reason)}; }

std::string upper(std::string_view text) {
  std::string result(text);
  for (char& c : result) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return result;
}

std::optional<element> field(element object, std::string_view name) {
  element value;
  if (object.type() != element_type::OBJECT || object[name].get(value) != simdjson::SUCCESS) return std::nullopt;
  if (value.is_null()) return std::nullopt;
  return value;
}

std::string string_field(element object, std::string_view name, std::string_view what) {
  const auto value = field(object, name);
  std::string_view text;
  if (!value || value->get_string().get(text) != simdjson::SUCCESS || text.empty()) {
    fail(std::string(what) + "." + std::string(name) + " is missing or not a string");
  }
  if (text.size() > stripe_id_bytes_max) fail(std::string(what) + "." + std::string(name) + " is too long");
  return std::string(text);
}

std::optional<std::string> optional_string(element object, std::string_view name) {
  const auto value = field(object, name);
  std::string_view text;
  if (!value || value->get_string().get(text) != simdjson::SUCCESS || text.empty() ||
      text.size() > stripe_id_bytes_max) {
    return std::nullopt;
  }
  return std::string(text);
}

// An id that may be a string or an expanded object with an id.
std::optional<std::string> id_or_object_id(element object, std::string_view name) {
  const auto value = field(object, name);
  if (!value) return std::nullopt;
  if (value->type() == element_type::OBJECT) return optional_string(*value, "id");
  return optional_string(object, name);
}

std::int64_t amount_field(element object, std::string_view name, std::string_view what) {
  const auto value = field(object, name);
  std::int64_t amount = 0;
  // Stripe amounts are JSON integers; simdjson parses integers exactly (no double involved), and
  // refuses 12.5 here rather than truncating it.
  if (!value || value->get_int64().get(amount) != simdjson::SUCCESS) {
    fail(std::string(what) + "." + std::string(name) + " is missing or not an integer");
  }
  if (amount < 0) fail(std::string(what) + "." + std::string(name) + " is negative");
  return amount;
}

std::int64_t created_field(element object) {
  const auto value = field(object, "created");
  std::int64_t created = 0;
  if (!value || value->get_int64().get(created) != simdjson::SUCCESS || created < 0) {
    fail("created is missing or not a unix time");
  }
  return created;
}

ledger::line debit(std::string account, std::int64_t amount, const std::string& currency) {
  return {std::move(account), amount, currency};
}
ledger::line credit(std::string account, std::int64_t amount, const std::string& currency) {
  return {std::move(account), -amount, currency};
}

struct money {
  std::int64_t minor = 0;
  std::string currency;
};

money money_of(element object, std::string_view amount_name, std::string_view what,
               const core::currency_table& currencies) {
  const std::int64_t amount = amount_field(object, amount_name, what);
  const std::string currency = string_field(object, "currency", what);
  const money_result converted = to_minor_units(amount, currency, currencies);
  if (!converted.ok) fail(std::string(what) + ": " + converted.error);
  return {converted.minor, converted.currency};
}

ledger::entry two_line_entry(std::string key, std::string description, std::int64_t occurred_at, const std::string& source,
                             std::string debit_account, std::string credit_account, const money& m) {
  ledger::entry e;
  e.idempotency_key = std::move(key);
  e.description = std::move(description);
  e.occurred_at_s = occurred_at;
  e.source = source;
  e.lines = {debit(std::move(debit_account), m.minor, m.currency), credit(std::move(credit_account), m.minor, m.currency)};
  return e;
}

struct context {
  const core::currency_table& currencies;
  std::string event_id;
  std::int64_t event_created = 0;
  posting_plan& plan;
};

// A balance transaction read from a JSON object (fetched, or embedded where Stripe expands it).
balance_transaction balance_transaction_of(element object) {
  balance_transaction bt;
  bt.id = string_field(object, "id", "balance_transaction");
  const auto signed_field = [&](std::string_view name) {
    const auto value = field(object, name);
    std::int64_t number = 0;
    if (!value || value->get_int64().get(number) != simdjson::SUCCESS) {
      fail("balance_transaction." + std::string(name) + " is missing or not an integer");
    }
    return number;
  };
  bt.amount = signed_field("amount");
  bt.fee = signed_field("fee");
  bt.net = signed_field("net");
  bt.currency = string_field(object, "currency", "balance_transaction");
  // The amount and fee are signed and come from outside: the subtraction is checked, as a wrapped
  // difference would be undefined behaviour.
  std::int64_t amount_less_fee = 0;
  if (__builtin_sub_overflow(bt.amount, bt.fee, &amount_less_fee)) {
    fail("balance_transaction " + bt.id + ": amount - fee does not fit in 64 bits");
  }
  if (amount_less_fee != bt.net) fail("balance_transaction " + bt.id + ": amount - fee != net");
  // Lines are negated when booked: INT64_MIN has no negation.
  if (bt.amount == INT64_MIN || bt.fee == INT64_MIN || bt.net == INT64_MIN) {
    fail("balance_transaction " + bt.id + ": an amount is out of range");
  }
  if (const auto rate = field(object, "exchange_rate"); rate && rate->is_number()) {
    bt.exchange_rate = simdjson::to_string(*rate);
  }
  return bt;
}

fetch_request fetch_of(std::string object, const std::string& id, std::string path) {
  return {std::move(object), id, std::move(path)};
}

fetch_request balance_transaction_fetch(const std::string& id) {
  return fetch_of("balance_transaction", id, "/v1/balance_transactions/" + id);
}

// Which field of the money object names a leg's balance transaction.
std::string_view settlement_field(const settlement_leg& leg) {
  if (leg.name == "refund_failed" || leg.name == "payout_failed") return "failure_balance_transaction";
  if (leg.name == "withdrawn" || leg.name == "reinstated") return "balance_transactions";
  return "balance_transaction";
}

// Settles `leg` from its money object: an expanded balance transaction is booked now, an id is
// fetched, nothing at all fetches the money object itself (`fallback`). A dispute lists its
// balance transactions: the withdrawal is the one that takes money out, the reinstatement the one
// that puts it back.
void settle_from(element object, settlement_leg& leg, const fetch_request& fallback) {
  leg.fetch = fallback;
  const std::string_view name = settlement_field(leg);
  const auto value = field(object, name);
  if (!value) return;
  if (name == "balance_transactions") {
    if (value->type() != element_type::ARRAY) fail("dispute.balance_transactions is not a list");
    std::size_t count = 0;
    for (element listed : value->get_array()) {
      if (++count > listed_refunds_max) fail("dispute.balance_transactions lists too many");
      balance_transaction bt = balance_transaction_of(listed);
      if ((bt.amount < 0 ? -1 : 1) == leg.direction && bt.amount != 0) {
        leg.settlement = std::move(bt);
        leg.fetch.reset();
        return;
      }
    }
    return;
  }
  if (value->type() == element_type::OBJECT) {
    leg.settlement = balance_transaction_of(*value);
    leg.fetch.reset();
    return;
  }
  if (const auto id = optional_string(object, name)) leg.fetch = balance_transaction_fetch(*id);
}

settlement_leg& add_leg(context& c, std::string object_id, std::string name, int direction, const money& m,
                        std::string counter_account, std::string description, std::int64_t occurred_at) {
  settlement_leg leg;
  leg.object_id = std::move(object_id);
  leg.name = std::move(name);
  leg.direction = direction;
  leg.amount_minor = m.minor;
  leg.currency = m.currency;
  leg.counter_account = std::move(counter_account);
  leg.fee_account = leg.counter_account == "disputes" ? "dispute.fees" : "stripe.fees";
  leg.description = std::move(description);
  leg.occurred_at_s = occurred_at;
  leg.source = c.event_id;
  c.plan.legs.push_back(std::move(leg));
  return c.plan.legs.back();
}

// The conversion and fee entries of a settled leg (settlement_leg's comment has the keys).
void add_settlement_entries(const settlement_leg& leg, const core::currency_table& currencies,
                            std::vector<ledger::entry>& out) {
  const balance_transaction& bt = *leg.settlement;
  const money_result settled = to_minor_units(bt.amount, bt.currency, currencies);
  const money_result fee = to_minor_units(bt.fee, bt.currency, currencies);
  if (!settled.ok || !fee.ok) fail("balance transaction " + bt.id + ": " + (settled.ok ? fee.error : settled.error));
  const std::string what = leg.description;
  // The balance moved the way the leg says, or the two contradict each other.
  if (leg.direction > 0 ? settled.minor <= 0 : settled.minor >= 0) {
    fail("balance transaction " + bt.id + " settles " + what + " for a " +
         (leg.direction > 0 ? "non-positive" : "non-negative") + " amount");
  }
  const bool gross = leg.name == "gross";
  const std::int64_t presented = leg.direction * leg.amount_minor;
  if (settled.currency != leg.currency) {
    // Settled in another currency: move the amount out of the presentment currency into the
    // settlement currency through the fx account, balanced in each currency.
    ledger::entry fx;
    fx.idempotency_key = settlement_keys_of(leg).fx;
    fx.description = (gross ? "Charge " + leg.object_id : what) + " settled in " + settled.currency +
                     (bt.exchange_rate ? " at " + *bt.exchange_rate : "");
    fx.occurred_at_s = leg.occurred_at_s;
    fx.source = bt.id;
    fx.lines = {debit("stripe.clearing", settled.minor, settled.currency), credit("fx", settled.minor, settled.currency),
                debit("fx", presented, leg.currency), credit("stripe.clearing", presented, leg.currency)};
    out.push_back(std::move(fx));
  } else if (settled.minor != presented) {
    fail("balance transaction " + bt.id + " amount differs from " + (gross ? "charge " + leg.object_id + "'s gross" : what));
  }
  if (fee.minor != 0) {
    out.push_back(two_line_entry(settlement_keys_of(leg).fee,
                                 (leg.fee_account == "dispute.fees" ? "Dispute fee for " : "Stripe fee for ") +
                                     (gross ? leg.object_id : what),
                                 leg.occurred_at_s, bt.id, leg.fee_account, "stripe.clearing",
                                 {fee.minor, fee.currency}));
  }
}

// entries and to_fetch from legs, every entry checked; the compatibility fields for the charge leg.
void rebuild(posting_plan& plan, const core::currency_table& currencies) {
  plan.entries.clear();
  plan.to_fetch.clear();
  plan.balance_transaction_id.reset();
  for (const settlement_leg& leg : plan.legs) {
    const money m{leg.amount_minor, leg.currency};
    const std::string key = leg.object_id + ":" + leg.name;
    plan.entries.push_back(leg.direction > 0 ? two_line_entry(key, leg.description, leg.occurred_at_s, leg.source,
                                                              "stripe.clearing", leg.counter_account, m)
                                             : two_line_entry(key, leg.description, leg.occurred_at_s, leg.source,
                                                              leg.counter_account, "stripe.clearing", m));
    plan.entries.back().metadata = leg.metadata;
    if (leg.settlement) {
      add_settlement_entries(leg, currencies, plan.entries);
    } else if (leg.fetch &&
               std::find(plan.to_fetch.begin(), plan.to_fetch.end(), *leg.fetch) == plan.to_fetch.end()) {
      plan.to_fetch.push_back(*leg.fetch);
    }
    if (leg.name == "gross") {
      plan.charge_id = leg.object_id;
      if (!leg.settlement && leg.fetch && leg.fetch->object == "balance_transaction") {
        plan.balance_transaction_id = leg.fetch->id;
      }
    }
  }
  for (const ledger::entry& e : plan.entries) {
    if (auto why = ledger::check_entry(e)) fail("planned entry " + e.idempotency_key + " is malformed: " + *why);
  }
  plan.reason = std::to_string(plan.entries.size()) + " entr" + (plan.entries.size() == 1 ? "y" : "ies");
  if (plan.awaiting_settlement()) {
    plan.reason += ", " + std::to_string(plan.to_fetch.size()) + " settlement(s) to fetch";
  }
}

fetch_request charge_fetch(const std::string& id) { return fetch_of("charge", id, "/v1/charges/" + id); }

void plan_gross(context& c, const std::string& charge_id, const money& gross, std::int64_t occurred_at,
                std::optional<element> holder) {
  if (gross.minor == 0) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "charge " + charge_id + " captured nothing";
    return;
  }
  settlement_leg& leg = add_leg(c, charge_id, "gross", 1, gross, "revenue", "Charge " + charge_id + " succeeded",
                                occurred_at);
  // No charge object at hand (latest_charge is an id): the charge is fetched, then its balance
  // transaction.
  if (holder) {
    settle_from(*holder, leg, charge_fetch(charge_id));
  } else {
    leg.fetch = charge_fetch(charge_id);
  }
}

void plan_charge(context& c, element charge) {
  const std::string id = string_field(charge, "id", "charge");
  const auto captured = field(charge, "captured");
  bool is_captured = true;
  if (captured && captured->get_bool().get(is_captured) != simdjson::SUCCESS) fail("charge.captured is not a boolean");
  if (!is_captured) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "charge " + id + " is authorized, not captured: charge.captured posts it";
    return;
  }
  // amount_captured is what moved; older API versions lack it and captured the whole amount.
  const money gross = money_of(charge, field(charge, "amount_captured") ? "amount_captured" : "amount", "charge",
                               c.currencies);
  plan_gross(c, id, gross, created_field(charge), charge);
}

void plan_payment_intent(context& c, element intent) {
  const std::string id = string_field(intent, "id", "payment_intent");
  // The charge that moved the money: latest_charge (API 2022-11-15 on), else charges.data[0].
  std::optional<std::string> charge_id = id_or_object_id(intent, "latest_charge");
  std::optional<element> holder;
  if (const auto latest = field(intent, "latest_charge"); latest && latest->type() == element_type::OBJECT) {
    holder = *latest;
  }
  if (!charge_id) {
    if (const auto charges = field(intent, "charges")) {
      if (const auto data = field(*charges, "data")) {
        element first;
        if (data->type() == element_type::ARRAY && data->at(0).get(first) == simdjson::SUCCESS) {
          charge_id = optional_string(first, "id");
          holder = first;
        }
      }
    }
  }
  if (!charge_id) fail("payment_intent " + id + " names no charge (latest_charge): cannot key its gross entry");
  const money gross = money_of(intent, "amount_received", "payment_intent", c.currencies);
  plan_gross(c, *charge_id, gross, created_field(intent), holder);
}

void plan_refund_object(context& c, element refund, bool reversal) {
  const std::string id = string_field(refund, "id", "refund");
  const money m = money_of(refund, "amount", "refund", c.currencies);
  if (m.minor == 0) return;
  const std::int64_t created = field(refund, "created") ? created_field(refund) : c.event_created;
  const fetch_request itself = fetch_of("refund", id, "/v1/refunds/" + id);
  settle_from(refund, add_leg(c, id, "refund", -1, m, "refunds", "Refund " + id, created), itself);
  if (reversal) {
    settle_from(refund, add_leg(c, id, "refund_failed", 1, m, "refunds", "Refund " + id + " failed", c.event_created),
                itself);
  }
}

void plan_refund(context& c, element refund, std::string_view type) {
  const std::string status = optional_string(refund, "status").value_or("");
  const bool failed = type == "refund.failed" || status == "failed" || status == "canceled";
  if (status == "requires_action" && !failed) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "refund awaits customer action; no money moved yet";
    return;
  }
  plan_refund_object(c, refund, failed);
}

void plan_charge_refunded(context& c, element charge) {
  const std::string id = string_field(charge, "id", "charge");
  const auto refunds = field(charge, "refunds");
  const auto data = refunds ? field(*refunds, "data") : std::nullopt;
  if (!data || data->type() != element_type::ARRAY) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "charge " + id + " lists no refunds (API 2022-11-15 on): refund.created posts each";
    return;
  }
  std::size_t count = 0;
  for (element refund : data->get_array()) {
    if (++count > listed_refunds_max) fail("charge.refunds lists more than listed_refunds_max refunds");
    const std::string status = optional_string(refund, "status").value_or("");
    plan_refund_object(c, refund, status == "failed" || status == "canceled");
  }
}

void plan_dispute(context& c, element dispute, std::string_view type) {
  const std::string id = string_field(dispute, "id", "dispute");
  if (type != "charge.dispute.funds_withdrawn" && type != "charge.dispute.funds_reinstated") {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "dispute " + id + ": no money moves on " + std::string(type) +
                    " (funds_withdrawn and funds_reinstated post)";
    return;
  }
  const money m = money_of(dispute, "amount", "dispute", c.currencies);
  const fetch_request itself = fetch_of("dispute", id, "/v1/disputes/" + id);
  if (type == "charge.dispute.funds_reinstated") {
    settle_from(dispute, add_leg(c, id, "reinstated", 1, m, "disputes", "Dispute " + id + " funds reinstated",
                                 c.event_created), itself);
    return;
  }
  // The dispute fee rides on the withdrawal's balance transaction, in its settlement currency.
  settle_from(dispute, add_leg(c, id, "withdrawn", -1, m, "disputes", "Dispute " + id + " funds withdrawn",
                               c.event_created), itself);
}

// What reconciliation matches a payout's deposit by: the day Stripe expects it in the bank
// (`arrival_date`, unix seconds) and the text the bank statement shows (`statement_descriptor`).
// Both are optional in Stripe's object (null before a payout is scheduled, or when the account's
// default descriptor applies); an arrival_date that is not a plausible unix time is an error, as
// the ledger turns it into a date.
static_assert(stripe_id_bytes_max <= ledger::metadata_value_bytes_max);
std::vector<std::pair<std::string, std::string>> payout_metadata(element payout) {
  constexpr std::int64_t arrival_date_s_max = 253'402'300'799;  // 9999-12-31T23:59:59Z
  std::vector<std::pair<std::string, std::string>> out;
  if (const auto value = field(payout, "arrival_date"); value && !value->is_null()) {
    std::int64_t arrival = 0;
    if (value->get_int64().get(arrival) != simdjson::SUCCESS || arrival < 0 || arrival > arrival_date_s_max) {
      fail("payout.arrival_date is not a unix time");
    }
    out.emplace_back("arrival_date", std::to_string(arrival));
  }
  // A descriptor with control characters is dropped, not stored: PostgreSQL's jsonb refuses
  // \u0000, and a posting must not fail for the text of a bank statement.
  const auto descriptor = optional_string(payout, "statement_descriptor");
  if (descriptor && std::none_of(descriptor->begin(), descriptor->end(),
                                 [](char ch) { return static_cast<unsigned char>(ch) < 0x20; })) {
    out.emplace_back("statement_descriptor", *descriptor);
  }
  return out;
}

void plan_payout(context& c, element payout, std::string_view type) {
  const std::string id = string_field(payout, "id", "payout");
  const money m = money_of(payout, "amount", "payout", c.currencies);
  if (m.minor == 0) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "payout " + id + " of zero";
    return;
  }
  const fetch_request itself = fetch_of("payout", id, "/v1/payouts/" + id);
  settlement_leg& paid = add_leg(c, id, "payout", -1, m, "bank", "Payout " + id, c.event_created);
  paid.metadata = payout_metadata(payout);
  settle_from(payout, paid, itself);
  if (type == "payout.failed") {
    settle_from(payout, add_leg(c, id, "payout_failed", 1, m, "bank", "Payout " + id + " failed", c.event_created),
                itself);
  }
}

void plan_application_fee(context& c, element fee, std::string_view type) {
  const std::string id = string_field(fee, "id", "application_fee");
  if (type == "application_fee.created") {
    const money m = money_of(fee, "amount", "application_fee", c.currencies);
    settle_from(fee, add_leg(c, id, "application_fee", 1, m, "application_fees", "Application fee " + id,
                             created_field(fee)),
                fetch_of("application_fee", id, "/v1/application_fees/" + id));
    return;
  }
  const auto refunds = field(fee, "refunds");
  const auto data = refunds ? field(*refunds, "data") : std::nullopt;
  if (!data || data->type() != element_type::ARRAY) fail("application_fee.refunds.data is missing");
  std::size_t count = 0;
  for (element refund : data->get_array()) {
    if (++count > listed_refunds_max) fail("application_fee.refunds lists more than listed_refunds_max refunds");
    const std::string refund_id = string_field(refund, "id", "fee_refund");
    const money m = money_of(refund, "amount", "fee_refund", c.currencies);
    if (m.minor == 0) continue;
    settle_from(refund, add_leg(c, refund_id, "application_fee_refund", -1, m, "application_fees",
                                "Application fee refund " + refund_id, c.event_created),
                fetch_of("fee_refund", refund_id, "/v1/application_fees/" + id + "/refunds/" + refund_id));
  }
}

void plan_invoice(context& c, element invoice) {
  const std::string id = string_field(invoice, "id", "invoice");
  c.plan.status = plan_status::ignore;
  if (id_or_object_id(invoice, "charge")) {
    c.plan.reason = "invoice " + id + " was paid by a charge, which posts the money";
  } else {
    c.plan.reason = "invoice " + id + " names no charge: its payment (a charge or payment intent of its own, or a "
                    "credit balance) posts whatever money moved through Stripe";
  }
}

// A failed plan posts nothing and asks for nothing: the reason is all it carries.
void fail_plan(posting_plan& plan, std::string reason) {
  plan.status = plan_status::fail;
  plan.reason = std::move(reason);
  plan.entries.clear();
  plan.legs.clear();
  plan.to_fetch.clear();
  plan.balance_transaction_id.reset();
}

// Settles the unsettled legs that `answer` (the money object or balance transaction fetched for
// `request`) resolves.
void settle_fetched(posting_plan& plan, element answer, const fetch_request& request) {
  if (answer.type() != element_type::OBJECT) fail("fetched " + request.object + " " + request.id + " is not an object");
  if (optional_string(answer, "id") != request.id || optional_string(answer, "object") != request.object) {
    fail("fetched " + request.object + " " + request.id + " names another object");
  }
  for (settlement_leg& leg : plan.legs) {
    if (leg.settlement || !leg.fetch || *leg.fetch != request) continue;
    if (request.object == "balance_transaction") {
      leg.settlement = balance_transaction_of(answer);
      leg.fetch.reset();
    } else {
      settle_from(answer, leg, request);
    }
  }
}

}  // namespace

int stripe_exponent(std::string_view currency) noexcept {
  std::array<char, 3> code{};
  if (currency.size() != 3) return 2;
  for (std::size_t i = 0; i < 3; ++i) code[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(currency[i])));
  const std::string_view upper_code(code.data(), 3);
  if (std::find(zero_decimal.begin(), zero_decimal.end(), upper_code) != zero_decimal.end()) return 0;
  if (std::find(three_decimal.begin(), three_decimal.end(), upper_code) != three_decimal.end()) return 3;
  return 2;  // including ISK, which Stripe treats as two-decimal
}

money_result to_minor_units(std::int64_t stripe_amount, std::string_view stripe_currency,
                            const core::currency_table& currencies) {
  money_result result;
  result.currency = upper(stripe_currency);
  const core::currency* currency = currencies.find(result.currency);
  if (currency == nullptr) {
    result.error = "unknown currency '" + result.currency.substr(0, 16) + "'";
    return result;
  }
  int shift = currency->exponent - stripe_exponent(result.currency);
  std::int64_t value = stripe_amount;
  for (; shift > 0; --shift) {
    if (__builtin_mul_overflow(value, 10, &value)) {
      result.error = "amount does not fit in 64-bit minor units";
      return result;
    }
  }
  for (; shift < 0; ++shift) {
    if (value % 10 != 0) {
      result.error = "amount " + std::to_string(stripe_amount) + " " + result.currency +
                     " has more precision than the currency's " + std::to_string(currency->exponent) + " decimal(s)";
      return result;
    }
    value /= 10;
  }
  result.ok = true;
  result.minor = value;
  return result;
}

posting_plan plan_postings(simdjson::dom::parser& parser, std::string_view event_json,
                           const core::currency_table& currencies) {
  posting_plan plan;
  if (event_json.size() > event_bytes_max) {
    plan.reason = "event larger than event_bytes_max";
    return plan;
  }
  try {
    element event;
    if (const auto error = parser.parse(event_json.data(), event_json.size()).get(event); error) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(error));
    }
    if (event.type() != element_type::OBJECT) fail("event is not a JSON object");
    plan.event_id = string_field(event, "id", "event");
    plan.event_type = string_field(event, "type", "event");
    plan.account = optional_string(event, "account");
    if (optional_string(event, "object").value_or("event") == "v2.core.event") {
      plan.status = plan_status::ignore;
      // Its related object is fetched by the stripe.post job (thin_event.hpp), which plans the
      // snapshot built from it instead; left as it is, a thin event moves no money.
      plan.reason = "thin event: planned from its fetched related object, not from itself";
      return plan;
    }
    context c{currencies, plan.event_id, created_field(event), plan};
    plan.status = plan_status::post;
    const auto data = field(event, "data");
    const auto object = data ? field(*data, "object") : std::nullopt;
    const std::string_view type = plan.event_type;
    const auto money_object = [&]() -> element {
      if (!object || object->type() != element_type::OBJECT) fail("data.object is missing");
      return *object;
    };
    if (type == "charge.succeeded" || type == "charge.captured") {
      plan_charge(c, money_object());
    } else if (type == "payment_intent.succeeded") {
      plan_payment_intent(c, money_object());
    } else if (type == "charge.refunded") {
      plan_charge_refunded(c, money_object());
    } else if (type == "refund.created" || type == "refund.updated" || type == "refund.failed" ||
               type == "charge.refund.updated") {
      plan_refund(c, money_object(), type);
    } else if (type.starts_with("charge.dispute.")) {
      plan_dispute(c, money_object(), type);
    } else if (type == "payout.paid" || type == "payout.failed") {
      plan_payout(c, money_object(), type);
    } else if (type == "application_fee.created" || type == "application_fee.refunded") {
      plan_application_fee(c, money_object(), type);
    } else if (type == "invoice.paid") {
      plan_invoice(c, money_object());
    } else {
      plan.status = plan_status::ignore;
      plan.reason = "event type " + plan.event_type + " moves no money we post";
    }
    if (plan.status == plan_status::post) {
      rebuild(plan, currencies);
    } else {
      plan.legs.clear();  // an ignored charge may have named itself before deciding
      plan.charge_id.reset();
    }
  } catch (const bad_event& error) {
    fail_plan(plan, error.reason);
  }
  return plan;
}

std::optional<balance_transaction> parse_balance_transaction(simdjson::dom::parser& parser, std::string_view json,
                                                             std::string& error) {
  try {
    element object;
    if (const auto code = parser.parse(json.data(), json.size()).get(object); code) {
      fail(std::string("malformed JSON: ") + simdjson::error_message(code));
    }
    return balance_transaction_of(object);
  } catch (const bad_event& failure) {
    error = failure.reason;
    return std::nullopt;
  }
}

posting_plan complete_plan(simdjson::dom::parser& parser, posting_plan plan, std::span<const fetched_object> fetched,
                           const core::currency_table& currencies) {
  if (plan.status != plan_status::post) return plan;
  try {
    if (fetched.size() > fetched_objects_max) fail("more than fetched_objects_max fetched objects");
    for (const fetched_object& answer : fetched) {
      if (std::find(plan.to_fetch.begin(), plan.to_fetch.end(), answer.request) == plan.to_fetch.end()) continue;
      if (answer.body.size() > event_bytes_max) fail("fetched " + answer.request.id + " larger than event_bytes_max");
      element object;
      if (const auto code = parser.parse(answer.body.data(), answer.body.size()).get(object); code) {
        fail("fetched " + answer.request.id + ": malformed JSON: " + simdjson::error_message(code));
      }
      settle_fetched(plan, object, answer.request);
    }
    rebuild(plan, currencies);
  } catch (const bad_event& error) {
    fail_plan(plan, error.reason);
  }
  return plan;
}

settlement_keys settlement_keys_of(const settlement_leg& leg) {
  const bool gross = leg.name == "gross";
  return {leg.object_id + (gross ? ":fee" : ":" + leg.name + "_fee"), leg.object_id + (gross ? ":fx" : ":" + leg.name + "_fx")};
}

settlement_summary settlement_summary_of(const posting_plan& plan) {
  settlement_summary summary;
  if (plan.status != plan_status::post) return summary;
  BW_INVARIANT(plan.legs.size() <= plan_legs_max);
  for (const settlement_leg& leg : plan.legs) {
    std::string key = leg.object_id + ":" + leg.name;
    if (leg.settlement) {
      summary.settled.push_back(std::move(key));
    } else {
      summary.awaited.push_back({std::move(key), settlement_keys_of(leg)});
    }
  }
  return summary;
}

posting_plan fee_entries(const ledger::entry& gross, const std::string& charge_id, const balance_transaction& bt,
                         const core::currency_table& currencies) {
  posting_plan plan;
  plan.status = plan_status::post;
  plan.charge_id = charge_id;
  if (gross.lines.empty()) {
    plan.status = plan_status::fail;
    plan.reason = "no gross entry for charge " + charge_id;
    return plan;
  }
  const ledger::line& charged = gross.lines.front();  // stripe.clearing, debit, charge currency
  settlement_leg leg;
  leg.object_id = charge_id;
  leg.name = "gross";
  leg.amount_minor = charged.amount_minor;
  leg.currency = charged.currency;
  leg.counter_account = "revenue";
  leg.fee_account = "stripe.fees";
  leg.description = "charge " + charge_id;
  leg.occurred_at_s = gross.occurred_at_s;
  leg.settlement = bt;
  try {
    add_settlement_entries(leg, currencies, plan.entries);
    for (const ledger::entry& e : plan.entries) {
      if (auto why = ledger::check_entry(e)) fail("planned entry " + e.idempotency_key + " is malformed: " + *why);
    }
  } catch (const bad_event& error) {
    fail_plan(plan, error.reason);
  }
  return plan;
}

std::string_view money_object_of(simdjson::dom::element event) {
  simdjson::dom::element object;
  if (event["data"]["object"].get(object) != simdjson::SUCCESS) return {};
  std::string_view text;
  if (object["object"].get(text) == simdjson::SUCCESS && text == "charge") {
    return object["id"].get(text) == simdjson::SUCCESS ? text : std::string_view{};
  }
  for (const char* field : {"charge", "latest_charge"}) {
    simdjson::dom::element named;
    if (object[field].get(named) != simdjson::SUCCESS) continue;
    if (named.get(text) == simdjson::SUCCESS && !text.empty()) return text;
    if (named["id"].get(text) == simdjson::SUCCESS && !text.empty()) return text;
  }
  return object["id"].get(text) == simdjson::SUCCESS ? text : std::string_view{};
}

}  // namespace bankworker::stripe
