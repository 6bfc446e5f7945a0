#include "tests/sim/stripe/simulator.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace bankworker::sim::stripe {

namespace {

constexpr std::int64_t stale_by_s = 600;  // twice Stripe's 300 s tolerance

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  for (std::size_t i = 0; i < size; ++i) {
    text.push_back(digits[bytes[i] >> 4]);
    text.push_back(digits[bytes[i] & 0x0f]);
  }
  return text;
}

std::string quoted(std::string_view text) { return "\"" + std::string(text) + "\""; }

// Thin events' `created`: RFC 3339 in UTC with milliseconds, as Stripe writes it.
std::string rfc3339(std::int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S.000Z", &utc);
  return text;
}

}  // namespace

std::optional<delivery_mode> parse_delivery_mode(std::string_view text) {
  if (text == "valid") return delivery_mode::valid;
  if (text == "duplicate") return delivery_mode::duplicate;
  if (text == "reorder") return delivery_mode::reorder;
  if (text == "stale") return delivery_mode::stale;
  if (text == "forged") return delivery_mode::forged;
  return std::nullopt;
}

simulator::simulator(std::uint64_t seed) : state_(seed == 0 ? 0x9e3779b97f4a7c15ULL : seed) {}

std::string simulator::sign(std::string_view body, std::string_view secret, std::int64_t timestamp_s) {
  const std::string t = std::to_string(timestamp_s);
  std::string payload = t + "." + std::string(body);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(payload.data()),
       payload.size(), digest, &length);
  return "t=" + t + ",v1=" + hex(digest, length);
}

std::string simulator::next_id(std::string_view prefix) {
  // splitmix64 for ids that look like Stripe's and are reproducible from the seed.
  state_ += 0x9e3779b97f4a7c15ULL;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  static constexpr char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string id(prefix);
  id += "_1";
  for (int i = 0; i < 14; ++i) {
    id.push_back(alphabet[z % 62]);
    z /= 62;
    if (z == 0) z = state_ ^ ++counter_;
  }
  id += std::to_string(++counter_);
  return id;
}

std::string simulator::add_event(std::string_view type, std::string object_json, const std::string& account,
                                 std::int64_t now_s) {
  const std::string id = next_id("evt");
  std::string json = "{\"id\":" + quoted(id) + ",\"object\":\"event\",\"api_version\":\"2024-06-20\",\"created\":" +
                     std::to_string(now_s) + ",\"livemode\":false,\"pending_webhooks\":1,\"type\":" + quoted(type) +
                     (account.empty() ? "" : ",\"account\":" + quoted(account)) + ",\"data\":{\"object\":" +
                     std::move(object_json) + "}}";
  events_.emplace_back(id, std::move(json));
  event_accounts_.push_back(account);
  return id;
}

std::string simulator::add_thin_event(std::string_view type, std::string_view related_id, std::string_view related_type,
                                      const std::string& url, const std::string& account, std::int64_t now_s) {
  const std::string id = next_id("evt");
  std::string json = "{\"id\":" + quoted(id) + ",\"object\":\"v2.core.event\",\"type\":" + quoted(type) +
                     ",\"created\":" + quoted(rfc3339(now_s)) + ",\"livemode\":false,\"context\":" +
                     (account.empty() ? std::string("null") : quoted(account)) + ",\"related_object\":{\"id\":" +
                     quoted(related_id) + ",\"type\":" + quoted(related_type) + ",\"url\":" + quoted(url) +
                     "},\"reason\":null}";
  thin_events_.emplace_back(id, std::move(json));
  return id;
}

std::string simulator::add_balance_transaction(const std::string& id, std::string_view type, std::string_view source,
                                               std::int64_t amount, std::int64_t fee, std::string_view currency,
                                               bool converted, const std::string& account, std::int64_t now_s) {
  // reporting_category as Stripe derives it from the type; fee_details itemise a non-zero fee.
  const std::string category = type == "payout_failure" ? "payout_reversal"
                               : type == "adjustment"   ? "dispute"
                                                        : std::string(type);
  const std::string fee_details =
      fee == 0 ? std::string("[]")
               : "[{\"amount\":" + std::to_string(fee) + ",\"application\":null,\"currency\":" + quoted(currency) +
                     ",\"description\":" + quoted(type == "adjustment" ? "Dispute fee" : "Stripe processing fees") +
                     ",\"type\":\"stripe_fee\"}]";
  std::string json = "{\"id\":" + quoted(id) + ",\"object\":\"balance_transaction\",\"amount\":" +
                     std::to_string(amount) + ",\"available_on\":" + std::to_string(now_s + 2 * 86'400) +
                     ",\"balance_type\":\"payments\",\"created\":" + std::to_string(now_s) +
                     ",\"currency\":" + quoted(currency) + ",\"description\":null,\"exchange_rate\":" +
                     (converted ? "0.8" : "null") + ",\"fee\":" + std::to_string(fee) +
                     ",\"fee_details\":" + fee_details + ",\"net\":" + std::to_string(amount - fee) +
                     ",\"reporting_category\":" + quoted(category) + ",\"source\":" + quoted(source) +
                     ",\"status\":\"available\",\"type\":" + quoted(type) + "}";
  balance_transactions_.emplace_back(id, json);
  balance_transaction_accounts_.push_back(account);
  return json;
}

simulator::charge_settlement simulator::settlement_of(const std::string& charge_id) const {
  for (const auto& [id, charge] : charges_) {
    if (id == charge_id) return charge;
  }
  return {};
}

std::int64_t simulator::settled_amount(std::int64_t amount, const charge_settlement& charge) {
  return charge.settlement == charge.currency ? amount : amount * 8 / 10;
}

std::size_t simulator::create_payment(const scenario& s, std::int64_t now_s) {
  const std::string amount = std::to_string(s.amount);
  const std::string currency = quoted(s.currency);
  const std::string charge = next_id("ch");
  const std::string intent = next_id("pi");
  const std::string txn = next_id("txn");
  const std::int64_t fee = s.fee >= 0 ? s.fee : s.amount * 29 / 1000 + 30;
  const charge_settlement currencies{s.currency, s.settlement_currency.empty() ? s.currency : s.settlement_currency};
  // A settlement in another currency converts at a fixed, made-up rate of 0.8.
  const std::int64_t settled = settled_amount(s.amount, currencies);
  add_balance_transaction(txn, "charge", charge, settled, fee, currencies.settlement,
                          currencies.settlement != currencies.currency, s.account, now_s);
  charges_.emplace_back(charge, currencies);
  const std::string charge_json = "{\"id\":" + quoted(charge) + ",\"object\":\"charge\",\"amount\":" + amount +
                                  ",\"amount_captured\":" + amount + ",\"currency\":" + currency +
                                  ",\"captured\":true,\"paid\":true,\"status\":\"succeeded\",\"created\":" +
                                  std::to_string(now_s) + ",\"payment_intent\":" + quoted(intent) +
                                  ",\"balance_transaction\":" + quoted(txn) + "}";
  const std::string intent_json = "{\"id\":" + quoted(intent) + ",\"object\":\"payment_intent\",\"amount\":" + amount +
                                  ",\"amount_received\":" + amount + ",\"currency\":" + currency +
                                  ",\"status\":\"succeeded\",\"created\":" + std::to_string(now_s) +
                                  ",\"latest_charge\":" + quoted(charge) + "}";
  objects_.push_back({"/v1/charges/" + charge, s.account, charge_json});
  objects_.push_back({"/v1/payment_intents/" + intent, s.account, intent_json});
  last_charge_ = charge;
  last_charge_amount_ = s.amount;
  last_charge_currency_ = s.currency;
  return objects_.size() - 2;
}

std::vector<delivery> simulator::trigger(const scenario& s, delivery_mode mode, std::string_view secret,
                                         std::int64_t now_s) {
  std::lock_guard lock(mutex_);
  const std::size_t first_event = events_.size();
  const std::string amount = std::to_string(s.amount);
  const std::string currency = quoted(s.currency);

  const std::size_t first_thin = thin_events_.size();
  if (s.kind == "payment") {
    const std::size_t first_object = create_payment(s, now_s);
    add_event("charge.succeeded", objects_[first_object].json, s.account, now_s);
    add_event("payment_intent.succeeded", objects_[first_object + 1].json, s.account, now_s);
  } else if (s.kind == "thin_payment") {
    const std::size_t first_object = create_payment(s, now_s);
    const served_object& intent = objects_[first_object + 1];
    add_thin_event("v1.payment_intent.succeeded", intent.path.substr(intent.path.rfind('/') + 1), "payment_intent",
                   intent.path, s.account, now_s);
  } else if (s.kind == "thin_unknown") {
    const std::string meter = next_id("mtr");
    objects_.push_back({"/v1/billing/meters/" + meter, s.account,
                        "{\"id\":" + quoted(meter) + ",\"object\":\"billing.meter\",\"status\":\"active\"}"});
    add_thin_event("v1.billing.meter.error_report_triggered", meter, "billing.meter", "/v1/billing/meters/" + meter,
                   s.account, now_s);
  } else if (s.kind == "refund") {
    const std::string charge = s.charge_id.empty() ? last_charge_ : s.charge_id;
    const std::string refund = next_id("re");
    // The refund leaves the balance in the charge's settlement currency, as its own balance
    // transaction says (the webhook names it by id: Stripe does not expand it).
    const charge_settlement settled_as = settlement_of(charge);
    const std::string txn = next_id("txn");
    add_balance_transaction(txn, "refund", refund, -settled_amount(s.amount, settled_as), 0,
                            settled_as.settlement.empty() ? s.currency : settled_as.settlement,
                            settled_as.settlement != settled_as.currency, s.account, now_s);
    const std::string refund_json = "{\"id\":" + quoted(refund) + ",\"object\":\"refund\",\"amount\":" + amount +
                                    ",\"balance_transaction\":" + quoted(txn) + ",\"currency\":" + currency +
                                    ",\"charge\":" + quoted(charge) + ",\"status\":\"succeeded\",\"created\":" +
                                    std::to_string(now_s) + "}";
    objects_.push_back({"/v1/refunds/" + refund, s.account, refund_json});
    add_event("refund.created", refund_json, s.account, now_s);
    add_event("charge.refunded",
              "{\"id\":" + quoted(charge) + ",\"object\":\"charge\",\"amount\":" + std::to_string(last_charge_amount_) +
                  ",\"currency\":" + currency + ",\"refunded\":true,\"refunds\":{\"object\":\"list\",\"data\":[" +
                  refund_json + "],\"has_more\":false}}",
              s.account, now_s);
  } else if (s.kind == "payout" || s.kind == "payout_failed") {
    const std::string payout = next_id("po");
    const std::string txn = next_id("txn");
    add_balance_transaction(txn, "payout", payout, -s.amount, 0, s.currency, false, s.account, now_s);
    const std::string payout_json = "{\"id\":" + quoted(payout) + ",\"object\":\"payout\",\"amount\":" + amount +
                                    ",\"balance_transaction\":" + quoted(txn) + ",\"currency\":" + currency +
                                    ",\"failure_balance_transaction\":null,\"status\":\"paid\",\"arrival_date\":" +
                                    std::to_string(s.arrival_date_s != 0 ? s.arrival_date_s : now_s) +
                                    ",\"statement_descriptor\":" +
                                    (s.statement_descriptor.empty() ? "null" : quoted(s.statement_descriptor)) + "}";
    add_event("payout.paid", payout_json, s.account, now_s);
    objects_.push_back({"/v1/payouts/" + payout, s.account, payout_json});
    if (s.kind == "payout_failed") {
      // The bank returned it: a payout_failure balance transaction puts the money back.
      const std::string failure_txn = next_id("txn");
      add_balance_transaction(failure_txn, "payout_failure", payout, s.amount, 0, s.currency, false, s.account, now_s);
      std::string failed_json = payout_json;
      failed_json.replace(failed_json.find("\"paid\""), 6, "\"failed\"");
      const std::string_view no_failure = "\"failure_balance_transaction\":null";
      failed_json.replace(failed_json.find(no_failure), no_failure.size(),
                          "\"failure_balance_transaction\":" + quoted(failure_txn));
      add_event("payout.failed", failed_json, s.account, now_s);
      objects_.back().json = failed_json;
    }
  } else if (s.kind == "application_fee") {
    // The platform's fee on a connected account's charge, in the charge's currency, credited to
    // the platform's balance by its own balance transaction (named by id, as Stripe sends it).
    const std::string fee = next_id("fee");
    const std::string charge = s.charge_id.empty() ? last_charge_ : s.charge_id;
    const std::string txn = next_id("txn");
    add_balance_transaction(txn, "application_fee", fee, s.amount, 0, s.currency, false, s.account, now_s);
    const std::string fee_json =
        "{\"id\":" + quoted(fee) + ",\"object\":\"application_fee\",\"account\":\"acct_1SimConnected\",\"amount\":" +
        amount + ",\"amount_refunded\":0,\"balance_transaction\":" + quoted(txn) + ",\"charge\":" + quoted(charge) +
        ",\"created\":" + std::to_string(now_s) + ",\"currency\":" + currency +
        ",\"livemode\":false,\"refunded\":false,\"refunds\":{\"object\":\"list\",\"data\":[],\"has_more\":false,"
        "\"url\":\"/v1/application_fees/" + fee + "/refunds\"}}";
    objects_.push_back({"/v1/application_fees/" + fee, s.account, fee_json});
    add_event("application_fee.created", fee_json, s.account, now_s);
  } else if (s.kind == "dispute") {
    const std::string dispute = next_id("dp");
    const std::string charge = s.charge_id.empty() ? last_charge_ : s.charge_id;
    // The withdrawal and its 15.00 fee leave the balance in the charge's settlement currency; the
    // dispute lists that balance transaction expanded, as Stripe does.
    const charge_settlement settled_as = settlement_of(charge);
    const std::string settlement = settled_as.settlement.empty() ? s.currency : settled_as.settlement;
    const std::string withdrawal =
        add_balance_transaction(next_id("txn"), "adjustment", dispute, -settled_amount(s.amount, settled_as), 1500,
                                settlement, settled_as.settlement != settled_as.currency, s.account, now_s);
    const std::string dispute_json = "{\"id\":" + quoted(dispute) + ",\"object\":\"dispute\",\"amount\":" + amount +
                                     ",\"currency\":" + currency + ",\"charge\":" + quoted(charge) +
                                     ",\"status\":\"needs_response\",\"balance_transactions\":[" + withdrawal + "]}";
    objects_.push_back({"/v1/disputes/" + dispute, s.account, dispute_json});
    add_event("charge.dispute.created", dispute_json, s.account, now_s);
    add_event("charge.dispute.funds_withdrawn", dispute_json, s.account, now_s);
  } else {
    return {};
  }

  std::vector<std::pair<std::string, std::string>> created(events_.begin() + static_cast<std::ptrdiff_t>(first_event),
                                                          events_.end());
  created.insert(created.end(), thin_events_.begin() + static_cast<std::ptrdiff_t>(first_thin), thin_events_.end());
  std::vector<delivery> deliveries;
  for (const auto& [id, body] : created) {
    std::string header;
    switch (mode) {
      case delivery_mode::stale: header = sign(body, secret, now_s - stale_by_s); break;
      case delivery_mode::forged: header = sign(body, "whsec_not_the_endpoint_secret", now_s); break;
      default: header = sign(body, secret, now_s);
    }
    deliveries.push_back({id, body, header});
    if (mode == delivery_mode::duplicate) deliveries.push_back(deliveries.back());
  }
  if (mode == delivery_mode::reorder) std::reverse(deliveries.begin(), deliveries.end());
  return deliveries;
}

std::optional<std::string> simulator::balance_transaction(std::string_view id, std::string_view account) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < balance_transactions_.size(); ++i) {
    if (balance_transactions_[i].first == id && balance_transaction_accounts_[i] == account) {
      return balance_transactions_[i].second;
    }
  }
  return std::nullopt;
}

std::optional<std::string> simulator::list_events(std::string_view account, std::string_view starting_after,
                                                  std::string_view ending_before, std::size_t limit) const {
  std::lock_guard lock(mutex_);
  std::vector<std::size_t> listed;  // the account's events, newest first
  for (std::size_t i = events_.size(); i > 0; --i) {
    if (event_accounts_[i - 1] == account) listed.push_back(i - 1);
  }
  const auto position = [&](std::string_view id) -> std::optional<std::size_t> {
    for (std::size_t i = 0; i < listed.size(); ++i) {
      if (events_[listed[i]].first == id) return i;
    }
    return std::nullopt;
  };
  std::size_t begin = 0;
  std::size_t end = std::min(listed.size(), limit);
  bool has_more = listed.size() > end;
  if (!starting_after.empty()) {
    const auto at = position(starting_after);
    if (!at) return std::nullopt;
    begin = *at + 1;
    end = std::min(listed.size(), begin + limit);
    has_more = end < listed.size();
  } else if (!ending_before.empty()) {
    const auto at = position(ending_before);
    if (!at) return std::nullopt;
    end = *at;
    begin = end > limit ? end - limit : 0;
    has_more = begin > 0;
  }
  std::string json = "{\"object\":\"list\",\"url\":\"/v1/events\",\"data\":[";
  for (std::size_t i = begin; i < end; ++i) {
    if (i != begin) json.push_back(',');
    json += events_[listed[i]].second;
  }
  json += "],\"has_more\":";
  json += has_more ? "true" : "false";
  json += "}";
  return json;
}

std::optional<std::string> simulator::object_at(std::string_view path, std::string_view account) const {
  std::lock_guard lock(mutex_);
  for (const served_object& o : objects_) {
    if (o.path == path && o.account == account) return o.json;
  }
  return std::nullopt;
}

std::vector<std::string> simulator::event_ids() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> ids;
  for (const auto& [id, json] : events_) ids.push_back(id);
  return ids;
}

}  // namespace bankworker::sim::stripe
