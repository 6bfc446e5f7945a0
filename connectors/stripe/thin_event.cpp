#include "connectors/stripe/thin_event.hpp"

#include <array>
#include <utility>

#include "connectors/stripe/posting.hpp"
#include "core/json_text.hpp"

namespace bankworker::stripe {

namespace {

// The snapshot types plan_postings posts, and the object each is about. A thin event posts only
// when its related object is of that type, so a fetched object is always the one the rules expect.
constexpr std::array<std::pair<std::string_view, std::string_view>, 13> posted_types = {{
    {"charge.succeeded", "charge"},
    {"charge.captured", "charge"},
    {"charge.refunded", "charge"},
    {"payment_intent.succeeded", "payment_intent"},
    {"refund.created", "refund"},
    {"refund.updated", "refund"},
    {"refund.failed", "refund"},
    {"charge.refund.updated", "refund"},
    {"payout.paid", "payout"},
    {"payout.failed", "payout"},
    {"application_fee.created", "application_fee"},
    {"application_fee.refunded", "application_fee"},
    {"invoice.paid", "invoice"},
}};

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// `count` digits of `text` from `at` as a number; -1 when one is not a digit.
int digits(std::string_view text, std::size_t at, std::size_t count) noexcept {
  if (at + count > text.size()) return -1;
  int value = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (!is_digit(text[i])) return -1;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

// Days from 1970-01-01 to year-month-day in the proleptic Gregorian calendar.
std::int64_t days_from_civil(std::int64_t y, int m, int d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

unsigned days_in_month(int year, int month) noexcept {
  static constexpr std::array<unsigned, 12> days = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[static_cast<std::size_t>(month - 1)];
}

bool id_like(std::string_view text) noexcept {
  if (text.empty() || text.size() > stripe_id_bytes_max) return false;
  for (const char c : text) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '.';
    if (!allowed) return false;
  }
  return true;
}

}  // namespace

bool is_thin_event(simdjson::dom::parser& parser, std::string_view json) {
  simdjson::dom::element event;
  std::string_view object;
  return parser.parse(json.data(), json.size()).get(event) == simdjson::SUCCESS &&
         event["object"].get(object) == simdjson::SUCCESS && object == thin_event_object;
}

std::optional<std::int64_t> parse_rfc3339_s(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)
  if (text.size() < 20 || text.size() > 40) return std::nullopt;
  const int year = digits(text, 0, 4), month = digits(text, 5, 2), day = digits(text, 8, 2);
  const int hour = digits(text, 11, 2), minute = digits(text, 14, 2), second = digits(text, 17, 2);
  if (text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':') {
    return std::nullopt;
  }
  if (year < 1970 || month < 1 || month > 12 || day < 1) return std::nullopt;
  if (static_cast<unsigned>(day) > days_in_month(year, month)) return std::nullopt;
  // 60 is a leap second; it is read as the next second's start.
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 60) return std::nullopt;
  std::size_t at = 19;
  if (text[at] == '.') {
    ++at;
    const std::size_t first = at;
    while (at < text.size() && is_digit(text[at])) ++at;
    if (at == first) return std::nullopt;
  }
  std::int64_t offset_s = 0;
  if (at + 1 == text.size() && (text[at] == 'Z' || text[at] == 'z')) {
    // UTC
  } else if (at + 6 == text.size() && (text[at] == '+' || text[at] == '-') && text[at + 3] == ':') {
    const int offset_hours = digits(text, at + 1, 2), offset_minutes = digits(text, at + 4, 2);
    if (offset_hours < 0 || offset_hours > 23 || offset_minutes < 0 || offset_minutes > 59) return std::nullopt;
    offset_s = (offset_hours * 3600 + offset_minutes * 60) * (text[at] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  const std::int64_t days = days_from_civil(year, month, day);
  return days * 86'400 + hour * 3'600 + minute * 60 + second - offset_s;
}

bool is_relative_api_path(std::string_view url) noexcept {
  if (url.size() > related_url_bytes_max) return false;
  if (!url.starts_with("/v1/") && !url.starts_with("/v2/")) return false;
  std::size_t segment = 0;  // bytes in the current segment
  for (std::size_t i = 1; i < url.size(); ++i) {
    const char c = url[i];
    if (c == '/') {
      if (segment == 0) return false;  // "//"
      segment = 0;
      continue;
    }
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '-';
    if (!allowed) return false;
    ++segment;
  }
  return segment > 0;  // no trailing '/'
}

std::optional<thin_event> parse_thin_event(simdjson::dom::parser& parser, std::string_view json, std::string& error) {
  simdjson::dom::element event;
  if (const auto code = parser.parse(json.data(), json.size()).get(event); code) {
    error = std::string("malformed JSON: ") + simdjson::error_message(code);
    return std::nullopt;
  }
  std::string_view text;
  if (event["object"].get(text) != simdjson::SUCCESS || text != thin_event_object) {
    error = "not a thin event (object is not v2.core.event)";
    return std::nullopt;
  }
  thin_event out;
  // Reads a member that must look like a Stripe id (or type); sets `error` naming it when not.
  const auto id_member = [&](simdjson::dom::element object, const char* name, std::string_view what,
                             std::string& into) {
    if (object[name].get(text) == simdjson::SUCCESS && id_like(text)) {
      into = std::string(text);
      return true;
    }
    error = "thin event " + (out.id.empty() ? std::string() : out.id + ": ") + std::string(what) +
            " is missing or not a Stripe id";
    return false;
  };
  if (!id_member(event, "id", "id", out.id) || !id_member(event, "type", "type", out.type)) return std::nullopt;
  std::optional<std::int64_t> created;
  if (event["created"].get(text) == simdjson::SUCCESS) created = parse_rfc3339_s(text);
  if (!created) {
    error = "thin event " + out.id + ": created is missing or not an RFC 3339 time";
    return std::nullopt;
  }
  out.created_s = *created;
  bool livemode = false;
  if (event["livemode"].get(livemode) == simdjson::SUCCESS) out.livemode = livemode;
  if (event["context"].get(text) == simdjson::SUCCESS && !text.empty()) {
    std::string account;
    if (!id_member(event, "context", "context", account)) return std::nullopt;
    out.account = std::move(account);
  }
  simdjson::dom::element related;
  if (event["related_object"].get(related) == simdjson::SUCCESS && !related.is_null()) {
    related_object r;
    if (!id_member(related, "id", "related_object.id", r.id) || !id_member(related, "type", "related_object.type", r.type)) {
      return std::nullopt;
    }
    // The url is checked when it is used (is_relative_api_path): a thin event about an object we
    // never fetch is stored and ignored whatever its url says.
    if (related["url"].get(text) != simdjson::SUCCESS || text.size() > related_url_bytes_max) {
      error = "thin event " + out.id + ": related_object.url is missing or too long";
      return std::nullopt;
    }
    r.url = std::string(text);
    out.related = std::move(r);
  }
  return out;
}

std::optional<std::string> snapshot_type_of(const thin_event& event) {
  if (!event.related || !event.type.starts_with("v1.")) return std::nullopt;
  const std::string_view type = std::string_view(event.type).substr(3);
  if (type.starts_with("charge.dispute.")) {
    if (event.related->type == "dispute") return std::string(type);
    return std::nullopt;
  }
  for (const auto& [posted, object] : posted_types) {
    if (type == posted && event.related->type == object) return std::string(type);
  }
  return std::nullopt;
}

std::string snapshot_event_json(const thin_event& event, std::string_view type, std::string_view object_json) {
  std::string json = "{\"id\":";
  core::append_json_string(event.id, json);
  json += ",\"object\":\"event\",\"type\":";
  core::append_json_string(type, json);
  json += ",\"created\":" + std::to_string(event.created_s) + ",\"livemode\":" + (event.livemode ? "true" : "false");
  if (event.account) {
    json += ",\"account\":";
    core::append_json_string(*event.account, json);
  }
  json += ",\"data\":{\"object\":";
  json += object_json;
  json += "}}";
  return json;
}

std::optional<std::string> unfetched_thin_money(simdjson::dom::parser& parser, std::string_view body) {
  if (!is_thin_event(parser, body)) return std::nullopt;
  std::string error;
  const std::optional<thin_event> thin = parse_thin_event(parser, body, error);
  if (!thin) return "thin event: " + error;
  if (!snapshot_type_of(*thin)) return std::nullopt;
  return "thin event " + thin->id + " needs its related object fetched, and no Stripe API is configured"
         " (BANKWORKER_STRIPE_API_BASE_URL)";
}

}  // namespace bankworker::stripe
