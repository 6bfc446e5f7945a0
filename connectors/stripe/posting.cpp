#include "connectors/stripe/posting.hpp"

#include <algorithm>
#include <array>
#include <cctype>

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

void plan_gross(context& c, const std::string& charge_id, const money& gross, std::int64_t occurred_at,
                const std::optional<std::string>& balance_transaction) {
  if (gross.minor == 0) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "charge " + charge_id + " captured nothing";
    return;
  }
  c.plan.entries.push_back(two_line_entry(charge_id + ":gross", "Charge " + charge_id + " succeeded", occurred_at,
                                          c.event_id, "stripe.clearing", "revenue", gross));
  c.plan.charge_id = charge_id;
  c.plan.balance_transaction_id = balance_transaction;
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
  plan_gross(c, id, gross, created_field(charge), id_or_object_id(charge, "balance_transaction"));
}

void plan_payment_intent(context& c, element intent) {
  const std::string id = string_field(intent, "id", "payment_intent");
  // The charge that moved the money: latest_charge (API 2022-11-15 on), else charges.data[0].
  std::optional<std::string> charge_id = id_or_object_id(intent, "latest_charge");
  std::optional<std::string> balance_transaction;
  if (const auto latest = field(intent, "latest_charge"); latest && latest->type() == element_type::OBJECT) {
    balance_transaction = id_or_object_id(*latest, "balance_transaction");
  }
  if (!charge_id) {
    if (const auto charges = field(intent, "charges")) {
      if (const auto data = field(*charges, "data")) {
        element first;
        if (data->type() == element_type::ARRAY && data->at(0).get(first) == simdjson::SUCCESS) {
          charge_id = optional_string(first, "id");
          balance_transaction = id_or_object_id(first, "balance_transaction");
        }
      }
    }
  }
  if (!charge_id) fail("payment_intent " + id + " names no charge (latest_charge): cannot key its gross entry");
  const money gross = money_of(intent, "amount_received", "payment_intent", c.currencies);
  plan_gross(c, *charge_id, gross, created_field(intent), balance_transaction);
}

void plan_refund_object(context& c, element refund, bool reversal) {
  const std::string id = string_field(refund, "id", "refund");
  const money m = money_of(refund, "amount", "refund", c.currencies);
  if (m.minor == 0) return;
  const std::int64_t created = field(refund, "created") ? created_field(refund) : c.event_created;
  c.plan.entries.push_back(two_line_entry(id + ":refund", "Refund " + id, created, c.event_id, "refunds",
                                          "stripe.clearing", m));
  if (reversal) {
    c.plan.entries.push_back(two_line_entry(id + ":refund_failed", "Refund " + id + " failed", c.event_created,
                                            c.event_id, "stripe.clearing", "refunds", m));
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
  if (type == "charge.dispute.created" || type == "charge.dispute.closed" || type == "charge.dispute.updated") {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "dispute " + id + ": no money moves on " + std::string(type) +
                    " (funds_withdrawn and funds_reinstated post)";
    return;
  }
  const money m = money_of(dispute, "amount", "dispute", c.currencies);
  if (type == "charge.dispute.funds_reinstated") {
    c.plan.entries.push_back(two_line_entry(id + ":reinstated", "Dispute " + id + " funds reinstated", c.event_created,
                                            c.event_id, "stripe.clearing", "disputes", m));
    return;
  }
  ledger::entry e = two_line_entry(id + ":withdrawn", "Dispute " + id + " funds withdrawn", c.event_created,
                                   c.event_id, "disputes", "stripe.clearing", m);
  // The dispute fee rides on the withdrawal's balance transaction, in its settlement currency.
  if (const auto transactions = field(dispute, "balance_transactions");
      transactions && transactions->type() == element_type::ARRAY) {
    for (element bt : transactions->get_array()) {
      const auto fee = field(bt, "fee");
      std::int64_t fee_amount = 0;
      if (!fee || fee->get_int64().get(fee_amount) != simdjson::SUCCESS || fee_amount <= 0) continue;
      const money fee_money = money_of(bt, "fee", "dispute.balance_transactions[]", c.currencies);
      e.lines.push_back(debit("dispute.fees", fee_money.minor, fee_money.currency));
      e.lines.push_back(credit("stripe.clearing", fee_money.minor, fee_money.currency));
    }
  }
  c.plan.entries.push_back(std::move(e));
}

void plan_payout(context& c, element payout, std::string_view type) {
  const std::string id = string_field(payout, "id", "payout");
  const money m = money_of(payout, "amount", "payout", c.currencies);
  if (m.minor == 0) {
    c.plan.status = plan_status::ignore;
    c.plan.reason = "payout " + id + " of zero";
    return;
  }
  c.plan.entries.push_back(
      two_line_entry(id + ":payout", "Payout " + id, c.event_created, c.event_id, "bank", "stripe.clearing", m));
  if (type == "payout.failed") {
    c.plan.entries.push_back(two_line_entry(id + ":payout_failed", "Payout " + id + " failed", c.event_created,
                                            c.event_id, "stripe.clearing", "bank", m));
  }
}

void plan_application_fee(context& c, element fee, std::string_view type) {
  const std::string id = string_field(fee, "id", "application_fee");
  if (type == "application_fee.created") {
    const money m = money_of(fee, "amount", "application_fee", c.currencies);
    c.plan.entries.push_back(two_line_entry(id + ":application_fee", "Application fee " + id, created_field(fee),
                                            c.event_id, "stripe.clearing", "application_fees", m));
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
    c.plan.entries.push_back(two_line_entry(refund_id + ":application_fee_refund", "Application fee refund " + refund_id,
                                            c.event_created, c.event_id, "application_fees", "stripe.clearing", m));
  }
}

void plan_invoice(context& c, element invoice) {
  const std::string id = string_field(invoice, "id", "invoice");
  c.plan.status = plan_status::ignore;
  if (id_or_object_id(invoice, "charge")) {
    c.plan.reason = "invoice " + id + " was paid by a charge, which posts the money";
  } else {
    c.plan.reason = "invoice " + id + " was paid without a Stripe charge (credit balance or out of band): no money "
                    "moved through Stripe";
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
      for (const ledger::entry& e : plan.entries) {
        if (auto why = ledger::check_entry(e)) fail("planned entry " + e.idempotency_key + " is malformed: " + *why);
      }
      plan.reason = std::to_string(plan.entries.size()) + " entr" + (plan.entries.size() == 1 ? "y" : "ies");
    }
  } catch (const bad_event& error) {
    plan.status = plan_status::fail;
    plan.reason = error.reason;
    plan.entries.clear();
    plan.balance_transaction_id.reset();
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
    balance_transaction bt;
    bt.id = string_field(object, "id", "balance_transaction");
    const auto amount = field(object, "amount");
    if (!amount || amount->get_int64().get(bt.amount) != simdjson::SUCCESS) fail("balance_transaction.amount is missing");
    bt.fee = amount_field(object, "fee", "balance_transaction");
    const auto net = field(object, "net");
    if (!net || net->get_int64().get(bt.net) != simdjson::SUCCESS) fail("balance_transaction.net is missing");
    bt.currency = string_field(object, "currency", "balance_transaction");
    // The amount is signed (refunds are negative) and comes from outside: the subtraction is
    // checked, as a wrapped difference would be undefined behaviour.
    std::int64_t amount_less_fee = 0;
    if (__builtin_sub_overflow(bt.amount, bt.fee, &amount_less_fee)) {
      fail("balance_transaction " + bt.id + ": amount - fee does not fit in 64 bits");
    }
    if (amount_less_fee != bt.net) fail("balance_transaction " + bt.id + ": amount - fee != net");
    return bt;
  } catch (const bad_event& failure) {
    error = failure.reason;
    return std::nullopt;
  }
}

posting_plan fee_entries(const ledger::entry& gross, const std::string& charge_id, const balance_transaction& bt,
                         const core::currency_table& currencies) {
  posting_plan plan;
  plan.status = plan_status::post;
  plan.charge_id = charge_id;
  const money_result settled = to_minor_units(bt.amount, bt.currency, currencies);
  const money_result fee = to_minor_units(bt.fee, bt.currency, currencies);
  if (!settled.ok || !fee.ok) {
    plan.status = plan_status::fail;
    plan.reason = "balance transaction " + bt.id + ": " + (settled.ok ? fee.error : settled.error);
    return plan;
  }
  if (gross.lines.empty()) {
    plan.status = plan_status::fail;
    plan.reason = "no gross entry for charge " + charge_id;
    return plan;
  }
  // A charge's money came in: its settlement is positive. Anything else contradicts the charge,
  // and negating it for the credit line could overflow (INT64_MIN).
  if (settled.minor <= 0) {
    plan.status = plan_status::fail;
    plan.reason = "balance transaction " + bt.id + " settles charge " + charge_id + " for a non-positive amount";
    return plan;
  }
  const ledger::line& charged = gross.lines.front();  // stripe.clearing, debit, charge currency
  if (settled.currency != charged.currency) {
    // Settled in another currency: move the gross out of the charge currency into the
    // settlement currency through the fx account, balanced in each currency.
    ledger::entry fx;
    fx.idempotency_key = charge_id + ":fx";
    fx.description = "Charge " + charge_id + " settled in " + settled.currency;
    fx.occurred_at_s = gross.occurred_at_s;
    fx.source = bt.id;
    fx.lines = {debit("stripe.clearing", settled.minor, settled.currency), credit("fx", settled.minor, settled.currency),
                debit("fx", charged.amount_minor, charged.currency),
                credit("stripe.clearing", charged.amount_minor, charged.currency)};
    plan.entries.push_back(std::move(fx));
  } else if (settled.minor != charged.amount_minor) {
    plan.status = plan_status::fail;
    plan.reason = "balance transaction " + bt.id + " amount differs from charge " + charge_id + "'s gross";
    return plan;
  }
  if (fee.minor > 0) {
    plan.entries.push_back(two_line_entry(charge_id + ":fee", "Stripe fee for " + charge_id, gross.occurred_at_s, bt.id,
                                          "stripe.fees", "stripe.clearing", {fee.minor, fee.currency}));
  }
  for (const ledger::entry& e : plan.entries) {
    if (auto why = ledger::check_entry(e)) {
      plan.status = plan_status::fail;
      plan.reason = "planned entry " + e.idempotency_key + " is malformed: " + *why;
      plan.entries.clear();
      return plan;
    }
  }
  return plan;
}

}  // namespace bankworker::stripe
