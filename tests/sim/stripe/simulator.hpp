#pragma once
// The Stripe side of the tests, the demo and the webhook benchmark (tests/sim/stripe).
//
// It keeps what Stripe would keep — events, charges' balance transactions, payouts — and produces
// the deliveries Stripe would send: the event JSON and a Stripe-Signature header computed as
// Stripe documents (HMAC-SHA256 keyed with the whole whsec_ secret over "<t>.<body>"), with the
// ways deliveries go wrong in real life: duplicates, reordering, stale timestamps, forged
// signatures. It signs with OpenSSL's HMAC, independently of bankworker's own verifier.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bankworker::sim::stripe {

// How a scenario's events are delivered.
enum class delivery_mode {
  valid,      // once each, in order, freshly signed
  duplicate,  // every event twice
  reorder,    // in reverse order
  stale,      // signed with a timestamp older than the 300 s tolerance
  forged,     // signed with a secret other than the endpoint's
};

std::optional<delivery_mode> parse_delivery_mode(std::string_view text);

struct scenario {
  // payment, refund, payout, payout_failed, dispute, application_fee; thin_payment (a thin v1.payment_intent.succeeded
  // whose payment intent, charge and balance transaction are served by the API), thin_unknown (a
  // thin event about a billing meter, which moves no money)
  std::string kind = "payment";
  std::int64_t amount = 2000;    // Stripe units
  std::string currency = "usd";
  std::string settlement_currency;  // empty: same as currency
  std::int64_t fee = -1;            // -1: 2.9% + 30 in Stripe units
  std::string account;              // Connect account the events belong to; empty for none
  std::string charge_id;            // refund/dispute of an existing charge; empty: the latest
  std::int64_t arrival_date_s = 0;  // payouts: the day Stripe expects it in the bank; 0: the trigger's time
  std::string statement_descriptor{};  // payouts: what the bank statement shows; empty: null, as Stripe sends it
};

struct delivery {
  std::string event_id;
  std::string body;
  std::string signature_header;
};

class simulator {
 public:
  explicit simulator(std::uint64_t seed);

  // Creates the scenario's objects and events; returns the deliveries to send, in send order.
  std::vector<delivery> trigger(const scenario& s, delivery_mode mode, std::string_view secret, std::int64_t now_s);

  // GET /v1/balance_transactions/{id} as `account` (Stripe-Account; empty: the platform's own):
  // the JSON, or nothing when unknown to that account.
  std::optional<std::string> balance_transaction(std::string_view id, std::string_view account) const;
  // GET /v1/events as Stripe lists them: `account`'s events (empty: the platform's own), newest
  // first; no cursor: the newest page; starting_after: the page older than that event;
  // ending_before: the page right newer than it (still newest first). Nothing when the cursor
  // is not an event of the account (Stripe answers 404 resource_missing).
  std::optional<std::string> list_events(std::string_view account, std::string_view starting_after,
                                         std::string_view ending_before, std::size_t limit) const;
  // GET of an object a thin event's related_object.url names, as `account` (empty: the
  // platform's own): the JSON, or nothing when unknown to that account.
  std::optional<std::string> object_at(std::string_view path, std::string_view account) const;
  // Every event created so far, oldest first (ground truth for tests).
  std::vector<std::string> event_ids() const;

  // Signs `body` at `timestamp_s` with `secret`: "t=…,v1=…".
  static std::string sign(std::string_view body, std::string_view secret, std::int64_t timestamp_s);

 private:
  std::string next_id(std::string_view prefix);
  std::string add_event(std::string_view type, std::string object_json, const std::string& account, std::int64_t now_s);
  // A thin event (object v2.core.event) about the object at `url`; not listed by /v1/events,
  // which lists snapshot events only.
  std::string add_thin_event(std::string_view type, std::string_view related_id, std::string_view related_type,
                             const std::string& url, const std::string& account, std::int64_t now_s);
  // Creates a charge, its payment intent and balance transaction; returns the index in objects_
  // of the charge, which the payment intent follows.
  std::size_t create_payment(const scenario& s, std::int64_t now_s);
  // Records a balance transaction shaped as Stripe's (every field of the OpenAPI fixture,
  // tests/fixtures/stripe/balance_transaction.json) and returns its JSON; its id is `id`.
  // `converted`: the amount was converted from another currency at the simulator's rate.
  std::string add_balance_transaction(const std::string& id, std::string_view type, std::string_view source,
                                      std::int64_t amount, std::int64_t fee, std::string_view currency, bool converted,
                                      const std::string& account, std::int64_t now_s);
  // What a charge settled in, for the refunds and disputes of it (Stripe settles those in the
  // charge's settlement currency at the charge's rate).
  struct charge_settlement {
    std::string currency;    // presentment, as sent
    std::string settlement;  // settlement currency
  };
  charge_settlement settlement_of(const std::string& charge_id) const;
  // `amount` of a charge's currency in its settlement currency (the made-up rate 0.8 when they differ).
  static std::int64_t settled_amount(std::int64_t amount, const charge_settlement& charge);

  mutable std::mutex mutex_;  // the HTTP server runs handlers on several threads
  std::uint64_t state_;
  std::uint64_t counter_ = 0;
  std::vector<std::pair<std::string, std::string>> events_;                // id, JSON, oldest first
  std::vector<std::string> event_accounts_;                                // per event: its account
  std::vector<std::pair<std::string, std::string>> balance_transactions_;  // id, JSON
  std::vector<std::string> balance_transaction_accounts_;                  // per balance transaction
  struct served_object {
    std::string path;  // /v1/payment_intents/pi_…
    std::string account;
    std::string json;
  };
  std::vector<served_object> objects_;  // what thin events' related_object.url names
  std::vector<std::pair<std::string, std::string>> thin_events_;  // id, JSON, oldest first
  std::vector<std::pair<std::string, charge_settlement>> charges_;  // charge id → its currencies
  std::string last_charge_;
  std::int64_t last_charge_amount_ = 0;
  std::string last_charge_currency_;
};

}  // namespace bankworker::sim::stripe
