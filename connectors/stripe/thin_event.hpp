#pragma once
// Thin events (`"object": "v2.core.event"`), pure and free of I/O.
//
// A thin event carries no snapshot of the object it is about, only a reference:
//   {"id":"evt_…","object":"v2.core.event","type":"v1.payment_intent.succeeded",
//    "created":"2026-11-22T06:48:32.123Z","livemode":false,"context":"acct_…"|null,
//    "related_object":{"id":"pi_…","type":"payment_intent","url":"/v1/payment_intents/pi_…"}}
// It is verified, stored and acknowledged like any other event; the stripe.post job fetches the
// related object (GET `url` relative to the configured Stripe base URL) and posts it through the
// snapshot posting rules (posting.hpp) as the event whose type is the thin type without its
// `v1.` prefix. A thin event about anything else (a billing meter, a v2 object) moves no money we
// post and is ignored without a fetch. connectors/stripe/README.md explains the decisions.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <simdjson.h>

namespace bankworker::stripe {

inline constexpr std::string_view thin_event_object = "v2.core.event";
inline constexpr std::size_t related_url_bytes_max = 512;

struct related_object {
  std::string id;    // pi_…
  std::string type;  // payment_intent
  std::string url;   // /v1/payment_intents/pi_…
};

struct thin_event {
  std::string id;
  std::string type;  // v1.payment_intent.succeeded
  std::int64_t created_s = 0;
  bool livemode = false;
  std::optional<std::string> account;  // `context`: the connected account the object belongs to
  std::optional<related_object> related;
};

// True when `json` is an object whose `object` is "v2.core.event" (cheap: no other field read).
bool is_thin_event(simdjson::dom::parser& parser, std::string_view json);

// Reads a thin event; nothing when it is not one or a field is missing or malformed (`error`
// says which). `related_object` may be null (then `related` is empty).
std::optional<thin_event> parse_thin_event(simdjson::dom::parser& parser, std::string_view json, std::string& error);

// "2026-11-22T06:48:32Z" or with a fraction ("…32.123Z") or an offset ("…32+01:00") → seconds
// since the epoch; nothing unless it is RFC 3339 with a valid date and time.
std::optional<std::int64_t> parse_rfc3339_s(std::string_view text);

// A path on the Stripe API the related object may be fetched from: "/v1/…" or "/v2/…", segments
// of letters, digits, '_' and '-' only, no empty segment, at most related_url_bytes_max bytes.
// Anything else (an absolute URL, "..", a query, percent escapes) is refused, so a thin event can
// never send our key anywhere but the configured Stripe base URL, or to another resource there
// than a plain object path.
bool is_relative_api_path(std::string_view url) noexcept;

// The snapshot event type whose posting rules apply to the related object ("v1.charge.succeeded"
// about a charge → "charge.succeeded"), or nothing when the event is not about a money object we
// post (then it is ignored, without fetching anything).
std::optional<std::string> snapshot_type_of(const thin_event& event);

// The snapshot event plan_postings reads: the thin event's id, created and account, `type`, and
// the fetched object (already validated JSON) as data.object.
std::string snapshot_event_json(const thin_event& event, std::string_view type, std::string_view object_json);

// A thin event about money whose related object must be fetched before it can post: why it waits
// (for the Stripe API, or for an operator when none is configured); nothing when `body` is not a
// thin event, or one about no money we post (the posting rules ignore it).
std::optional<std::string> unfetched_thin_money(simdjson::dom::parser& parser, std::string_view body);

}  // namespace bankworker::stripe
