#include "tests/sim/plaid/simulator.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <variant>
#include <vector>

#include "tests/sim/plaid/signer.hpp"

namespace bankworker::sim::plaid {

namespace {

// ---------------------------------------------------------------------------------------------
// Determinism: splitmix64, with our own range reduction so the data does not depend on the
// standard library's distributions.

struct rng {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t bound) noexcept { return bound == 0 ? 0 : next() % bound; }
  std::int64_t between(std::int64_t lo, std::int64_t hi) noexcept {
    return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo + 1)));
  }
};

std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept { return rng{a ^ (b * 0xD1B54A32D192ED03ULL)}.next(); }

// FNV-1a: std::hash is free to change between library versions, and the data must not.
std::uint64_t fnv1a(std::string_view text) noexcept {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (const char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ULL;
  return h;
}

constexpr char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

std::string random_base62(rng& r, std::size_t length) {
  std::string out(length, '0');
  for (auto& c : out) c = base62[r.below(62)];
  return out;
}

std::string random_uuid(rng& r) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    auto byte = static_cast<unsigned>(r.below(256));
    if (i == 6) byte = (byte & 0x0F) | 0x40;
    if (i == 8) byte = (byte & 0x3F) | 0x80;
    out += hex[byte >> 4];
    out += hex[byte & 15];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dates as days since 1970-01-01 (Howard Hinnant's civil calendar algorithms).

std::int32_t days_from_civil(int y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int>(doe) - 719468;
}

std::string civil_from_days(std::int32_t z) {
  z += 719468;
  const int era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int y = static_cast<int>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  char text[48];
  std::snprintf(text, sizeof text, "%04d-%02u-%02u", y, m, d);
  return text;
}

std::optional<std::int32_t> parse_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  int y = 0;
  unsigned m = 0, d = 0;
  if (std::from_chars(text.data(), text.data() + 4, y).ec != std::errc{}) return std::nullopt;
  if (std::from_chars(text.data() + 5, text.data() + 7, m).ec != std::errc{}) return std::nullopt;
  if (std::from_chars(text.data() + 8, text.data() + 10, d).ec != std::errc{}) return std::nullopt;
  if (m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
  const std::int32_t days = days_from_civil(y, m, d);
  if (civil_from_days(days) != text) return std::nullopt;  // 2026-02-30 and friends
  return days;
}

// Generated history ends here whatever the wall clock says, so a seed always means the same data.
const std::int32_t history_end_days = days_from_civil(2026, 10, 31);
constexpr std::int32_t history_span_days = 180;

// ---------------------------------------------------------------------------------------------
// JSON output.

// Appends runs of plain bytes at once: data generation serialises every transaction once, and a
// character-at-a-time loop dominated start-up at the 100 × 1,000 scale.
void append_string(std::string& out, std::string_view text) {
  out += '"';
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
        out += escaped;
      }
    }
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

void append_optional(std::string& out, const std::optional<std::string>& text) {
  if (text) append_string(out, *text);
  else out += "null";
}

void append_key(std::string& out, std::string_view key) {
  append_string(out, key);
  out += ':';
}

// Minor units as the JSON number Plaid would print: the currency's decimals, trailing zeros
// dropped (72.10 is written 72.1, 1500.00 is 1500), never through a double.
void append_amount(std::string& out, std::int64_t minor, int exponent) {
  const bool negative = minor < 0;
  const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(minor) : static_cast<std::uint64_t>(minor);
  std::string digits = std::to_string(magnitude);
  if (negative) out += '-';
  if (exponent == 0) {
    out += digits;
    return;
  }
  const auto e = static_cast<std::size_t>(exponent);
  if (digits.size() <= e) digits.insert(0, e + 1 - digits.size(), '0');
  std::string whole = digits.substr(0, digits.size() - e);
  std::string fraction = digits.substr(digits.size() - e);
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  out += whole;
  if (!fraction.empty()) {
    out += '.';
    out += fraction;
  }
}

// ---------------------------------------------------------------------------------------------
// The world the data is drawn from.

struct currency_info {
  const char* code;
  int exponent;
  bool official;  // false: reported in unofficial_currency_code
  std::int64_t per_usd_cent_num;  // minor units per US cent, as a fraction
  std::int64_t per_usd_cent_den;
};

// USD, EUR, JPY (no decimals), BHD (three) and BTC (eight, unofficial), as the issue asks.
constexpr std::array<currency_info, 5> currencies{{
    {"USD", 2, true, 1, 1},
    {"EUR", 2, true, 92, 100},
    {"JPY", 0, true, 3, 2},
    {"BHD", 3, true, 377, 100},
    {"BTC", 8, false, 50, 3},
}};

struct account_template {
  const char* name;
  const char* official_name;
  const char* type;
  const char* subtype;
  std::size_t currency;
  unsigned weight;  // share of the item's transactions
};

constexpr std::array<account_template, 6> account_templates{{
    {"Plaid Checking", "Plaid Gold Standard 0% Interest Checking", "depository", "checking", 0, 40},
    {"Plaid Credit Card", "Plaid Diamond 12.5% APR Interest Credit Card", "credit", "credit card", 0, 25},
    {"Compte Courant", "Compte Courant Particuliers", "depository", "checking", 1, 10},
    {"普通預金", "普通預金口座", "depository", "savings", 2, 10},
    {"Current Account", "Current Account BHD", "depository", "checking", 3, 8},
    {"Bitcoin Wallet", nullptr, "investment", "crypto exchange", 4, 7},
}};

struct merchant {
  const char* name;  // the raw bank description
  const char* merchant_name;
  const char* website;
  const char* primary;
  const char* detailed;
  const char* channel;
  const char* transaction_type;
  std::int64_t low_cents;
  std::int64_t high_cents;
  bool inflow;
};

constexpr std::array<merchant, 22> merchants{{
    {"PURCHASE WM SUPERCENTER #1700", "Walmart", "walmart.com", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_SUPERSTORES", "in store", "place", 500, 25000, false},
    {"Starbucks Coffee #2210", "Starbucks", "starbucks.com", "FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE", "in store", "place", 250, 1800, false},
    {"Uber 063015 SF**POOL**", "Uber", "uber.com", "TRANSPORTATION", "TRANSPORTATION_TAXIS_AND_RIDE_SHARES", "online", "special", 600, 6500, false},
    {"AMAZON MKTPL*2K4TX91", "Amazon", "amazon.com", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES", "online", "digital", 799, 34999, false},
    {"Netflix.com", "Netflix", "netflix.com", "ENTERTAINMENT", "ENTERTAINMENT_TV_AND_MOVIES", "online", "digital", 1549, 2299, false},
    {"SHELL OIL 57444255", "Shell", "shell.com", "TRANSPORTATION", "TRANSPORTATION_GAS", "in store", "place", 2000, 9000, false},
    {"Dd Doordash Burgerkin", "Burger King", "burgerking.com", "FOOD_AND_DRINK", "FOOD_AND_DRINK_FAST_FOOD", "online", "digital", 900, 4500, false},
    {"WHOLEFDS MKT #10234", "Whole Foods Market", "wholefoodsmarket.com", "FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES", "in store", "place", 1500, 22000, false},
    {"COMCAST CABLE COMM", "Comcast", "xfinity.com", "RENT_AND_UTILITIES", "RENT_AND_UTILITIES_INTERNET_AND_CABLE", "online", "special", 7999, 15999, false},
    {"CVS/PHARMACY #04210", "CVS", "cvs.com", "MEDICAL", "MEDICAL_PHARMACIES_AND_SUPPLEMENTS", "in store", "place", 399, 8900, false},
    {"DELTA AIR LINES 0062", "Delta", "delta.com", "TRAVEL", "TRAVEL_FLIGHTS", "online", "digital", 12000, 89000, false},
    {"Spotify USA", "Spotify", "spotify.com", "ENTERTAINMENT", "ENTERTAINMENT_MUSIC_AND_AUDIO", "online", "digital", 1099, 1699, false},
    {"ATM WITHDRAWAL 000412 5TH AVE", nullptr, nullptr, "TRANSFER_OUT", "TRANSFER_OUT_WITHDRAWAL", "in store", "special", 2000, 40000, false},
    {"Café de Flore Paris", "Café de Flore", nullptr, "FOOD_AND_DRINK", "FOOD_AND_DRINK_RESTAURANT", "in store", "place", 800, 6000, false},
    {"セブン-イレブン 渋谷店", "7-Eleven", "7-eleven.com", "FOOD_AND_DRINK", "FOOD_AND_DRINK_GROCERIES", "in store", "place", 150, 2500, false},
    {"RENT PAYMENT \"OAK\\ST\" APTS", "Oak Street Apartments", nullptr, "RENT_AND_UTILITIES", "RENT_AND_UTILITIES_RENT", "other", "special", 120000, 320000, false},
    {"United Airlines", "United Airlines", "united.com", "TRAVEL", "TRAVEL_FLIGHTS", "online", "special", 9000, 120000, false},
    {"ACH PAYROLL ACME CORP PPD", "Acme Corp", nullptr, "INCOME", "INCOME_WAGES", "other", "special", 150000, 650000, true},
    {"INTEREST PAYMENT", nullptr, nullptr, "INCOME", "INCOME_INTEREST_EARNED", "other", "special", 1, 2500, true},
    {"Zelle payment from J SMITH", nullptr, nullptr, "TRANSFER_IN", "TRANSFER_IN_ACCOUNT_TRANSFER", "other", "special", 1000, 50000, true},
    {"AMAZON REFUND RTN*8QX", "Amazon", "amazon.com", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES", "online", "digital", 799, 9999, true},
    {"CREDIT CARD 3333 PAYMENT *//", nullptr, nullptr, "LOAN_PAYMENTS", "LOAN_PAYMENTS_CREDIT_CARD_PAYMENT", "other", "special", 2500, 150000, false},
}};

// ---------------------------------------------------------------------------------------------
// Items, transactions and the change log cursors walk.

struct account {
  std::string account_id;
  std::string mask;
  std::size_t template_index = 0;
  std::int64_t current_minor = 0;
  std::int64_t available_minor = 0;
};

struct transaction {
  std::string transaction_id;
  std::uint32_t account = 0;
  std::int64_t amount_minor = 0;  // Plaid's sign: positive is money out of the account
  std::int32_t date_days = 0;
  std::optional<std::int32_t> authorized_days;
  std::string name;
  std::optional<std::string> merchant_name;
  std::optional<std::string> website;
  std::optional<std::string> merchant_entity_id;
  std::string category_primary;
  std::string category_detailed;
  std::string payment_channel;
  std::string transaction_type;
  bool pending = false;
  std::optional<std::string> pending_transaction_id;
  // Set by /sim/transactions/add|modify: the transaction is reported in this unofficial currency
  // (2 decimals) instead of its account's, as a bank may report a currency the client does not
  // know yet (issue #16: such a row is quarantined, not its page).
  std::optional<std::string> unofficial_currency_code;
};

enum class change_kind : std::uint8_t { added, modified, removed };

// One entry of an item's update history. A cursor is a position in this log, so paging never
// misses or repeats an update, and the log is replayed in order (an added snapshot may be
// followed by a modified one for the same id; applying them in order gives the current state).
struct change {
  change_kind kind;
  std::uint32_t snapshot;  // index into item::snapshots: the serialised object for this entry
};

struct item {
  std::string item_id;
  std::string access_token;
  std::string institution_id;
  std::optional<std::string> webhook;
  bool removed = false;
  rng random{0};
  std::vector<account> accounts;
  std::string accounts_json;
  std::vector<std::string> snapshots;
  std::vector<change> log;
  std::unordered_map<std::string, transaction> live;
  std::deque<std::int64_t> sync_calls_s;  // when recent accepted /transactions/sync calls came
};

struct public_token {
  std::size_t item = 0;
  std::int64_t expires_at_s = 0;
  bool used = false;
};

struct cursor {
  std::size_t position = 0;  // next log entry to return
  std::size_t bound = 0;     // log length when this pagination began
  std::uint32_t page = 0;    // pages served in this pagination
};

struct fault {
  std::uint64_t id = 0;
  std::string endpoint;  // empty: every Plaid endpoint
  std::string item_id;   // empty: every item
  std::uint32_t page = 0;  // /transactions/sync only: 0 any page, k the k-th page of a pagination
  std::int64_t remaining = 1;
  std::string error_code;  // set: answer with this Plaid error
  std::int64_t delay_ms = 0;
  reply_shape shape = reply_shape::normal;
};

struct call_record {
  std::uint64_t sequence = 0;
  std::string endpoint;
  std::string item_id;
  unsigned status = 0;
  std::string error_code;
};

struct received_webhook {
  std::string verification;
  std::string body;
};

// ---------------------------------------------------------------------------------------------
// Plaid's errors: type, HTTP status and wording per code (our words, Plaid's meaning).

struct error_definition {
  std::string_view code;
  std::string_view type;
  unsigned status;
  std::string_view message;
  std::string_view display;  // empty: null
};

constexpr std::array<error_definition, 22> error_definitions{{
    {"INVALID_API_KEYS", "INVALID_INPUT", 400, "invalid client_id or secret provided", ""},
    {"INVALID_ACCESS_TOKEN", "INVALID_INPUT", 400, "provided access token is in an invalid format or does not exist", ""},
    {"INVALID_PUBLIC_TOKEN", "INVALID_INPUT", 400, "provided public token is expired or has already been exchanged; public tokens expire 30 minutes after creation", ""},
    {"MISSING_FIELDS", "INVALID_REQUEST", 400, "the following required fields are missing", ""},
    {"INVALID_FIELD", "INVALID_REQUEST", 400, "a field has an invalid value", ""},
    {"INVALID_BODY", "INVALID_REQUEST", 400, "body could not be parsed as a JSON object", ""},
    {"NOT_FOUND", "INVALID_REQUEST", 404, "not found", ""},
    {"ITEM_NOT_FOUND", "ITEM_ERROR", 400, "the requested item was not found; it may have been removed with /item/remove", ""},
    {"ITEM_LOGIN_REQUIRED", "ITEM_ERROR", 400, "the login details of this item have changed (credentials, MFA, or required user action) and a user login is required to update this information; use Link's update mode to restore the item to a good state", "the login details of this item have changed; please log in again to update them"},
    {"ITEM_LOCKED", "ITEM_ERROR", 400, "the financial institution indicated that the user's account is locked; the user will need to work with the institution directly to unlock their account", "your account is locked; please contact your bank"},
    {"USER_PERMISSION_REVOKED", "ITEM_ERROR", 400, "the user has revoked their permission for this item", "you revoked access to this account"},
    {"INSTITUTION_DOWN", "INSTITUTION_ERROR", 400, "this institution is not currently responding to this request; please try again soon", "this financial institution is not currently responding to requests; we apologize for the inconvenience"},
    {"INSTITUTION_NOT_RESPONDING", "INSTITUTION_ERROR", 400, "this institution is failing to respond to this request; please try again soon", "this financial institution is not currently responding to requests; we apologize for the inconvenience"},
    {"INTERNAL_SERVER_ERROR", "API_ERROR", 500, "an unexpected error occurred", "something went wrong; please try again later"},
    {"PLANNED_MAINTENANCE", "API_ERROR", 503, "the Plaid API is temporarily unavailable due to planned maintenance; visit https://status.plaid.com/ for more information", "the service is temporarily unavailable"},
    {"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", "TRANSACTIONS_ERROR", 400, "underlying transaction data changed since last page was fetched; please restart pagination from last update", ""},
    {"TRANSACTIONS_SYNC_LIMIT", "RATE_LIMIT_EXCEEDED", 429, "rate limit exceeded for attempts to access /transactions/sync for this item; please try again later", ""},
    {"ACCOUNTS_LIMIT", "RATE_LIMIT_EXCEEDED", 429, "rate limit exceeded for attempts to access /accounts/get for this item; please try again later", ""},
    {"RATE_LIMIT", "RATE_LIMIT_EXCEEDED", 429, "rate limit exceeded; please try again later", ""},
    {"SANDBOX_PRODUCT_NOT_ENABLED", "INVALID_INPUT", 400, "a requested product is not enabled for this sandbox client", ""},
    {"INVALID_PRODUCT", "INVALID_INPUT", 400, "a requested product is not supported by the simulator", ""},
    {"INVALID_INSTITUTION", "INVALID_INPUT", 400, "the provided institution_id does not exist", ""},
}};

const error_definition* find_error(std::string_view code) {
  for (const auto& definition : error_definitions) {
    if (definition.code == code) return &definition;
  }
  return nullptr;
}

// RATE_LIMIT_EXCEEDED is an error *type*; the code depends on the endpoint, as with Plaid.
std::string_view rate_limit_code_for(std::string_view endpoint) {
  if (endpoint == "/transactions/sync") return "TRANSACTIONS_SYNC_LIMIT";
  if (endpoint == "/accounts/get") return "ACCOUNTS_LIMIT";
  return "RATE_LIMIT";
}

constexpr std::array<std::string_view, 6> plaid_endpoints{
    "/sandbox/public_token/create", "/item/public_token/exchange", "/accounts/get",
    "/transactions/sync",           "/item/remove",               "/webhook_verification_key/get"};

bool is_plaid_endpoint(std::string_view path) {
  return std::find(plaid_endpoints.begin(), plaid_endpoints.end(), path) != plaid_endpoints.end();
}

// ---------------------------------------------------------------------------------------------
// Request fields (simdjson DOM: requests are small and read in any order).

enum class field { missing, ok, wrong_type };

field read_string(simdjson::dom::object object, std::string_view key, std::string_view& out) {
  simdjson::dom::element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS || value.is_null()) return field::missing;
  return value.get_string().get(out) == simdjson::SUCCESS ? field::ok : field::wrong_type;
}

field read_int(simdjson::dom::object object, std::string_view key, std::int64_t& out) {
  simdjson::dom::element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS || value.is_null()) return field::missing;
  return value.get_int64().get(out) == simdjson::SUCCESS ? field::ok : field::wrong_type;
}

field read_bool(simdjson::dom::object object, std::string_view key, bool& out) {
  simdjson::dom::element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS || value.is_null()) return field::missing;
  return value.get_bool().get(out) == simdjson::SUCCESS ? field::ok : field::wrong_type;
}

// A failed request: the error code and, when it needs one, a message naming the field.
struct failure {
  std::string code;
  std::string message;  // empty: the catalogue's wording
};

}  // namespace

// =============================================================================================

struct simulator::state {
  simulator_settings settings;
  webhook_signer signer;
  std::mutex mutex;  // guards everything below
  rng random;
  std::uint64_t request_counter = 0;
  std::vector<item> items;
  std::unordered_map<std::string, std::size_t> items_by_token;
  std::unordered_map<std::string, std::size_t> items_by_id;
  std::unordered_map<std::string, public_token> public_tokens;
  std::size_t transactions_total = 0;
  std::vector<fault> faults;
  std::uint64_t next_fault_id = 1;
  std::vector<call_record> calls;
  std::uint64_t calls_dropped = 0;
  std::uint64_t call_sequence = 0;
  std::deque<received_webhook> webhooks_received;
  std::deque<std::int64_t> client_sync_calls_s;
  simdjson::dom::parser parser;  // used under the mutex only

  state(simulator_settings s, std::int64_t now_s)
      : settings(std::move(s)), signer(now_s), random{mix(settings.seed, 0x51AB)} {}

  std::string next_request_id() {
    rng r{mix(settings.seed ^ 0x5EC0'0E57'1D00'0000ULL, ++request_counter)};  // a stream apart from the items'
    return random_base62(r, 15);
  }

  // -------------------------------------------------------------------------------------------
  // Errors.

  reply error_reply(std::string_view code, std::string_view message_override = {}) {
    const error_definition* definition = find_error(code);
    if (definition == nullptr) definition = find_error("INTERNAL_SERVER_ERROR");
    reply r;
    r.status = definition->status;
    std::string& out = r.body;
    out += '{';
    append_key(out, "display_message");
    if (definition->display.empty()) out += "null";
    else append_string(out, definition->display);
    out += ',';
    append_key(out, "documentation_url");
    append_string(out, "https://plaid.com/docs/errors/");
    out += ',';
    append_key(out, "error_code");
    append_string(out, definition->code);
    out += R"(,"error_code_reason":null,)";
    append_key(out, "error_message");
    append_string(out, message_override.empty() ? definition->message : message_override);
    out += ',';
    append_key(out, "error_type");
    append_string(out, definition->type);
    out += ',';
    append_key(out, "request_id");
    append_string(out, next_request_id());
    out += R"(,"suggested_action":null})";
    return r;
  }

  reply error_reply(const failure& f) { return error_reply(f.code, f.message); }

  // -------------------------------------------------------------------------------------------
  // Data generation.

  void serialise_accounts(item& it) {
    std::string& out = it.accounts_json;
    out.clear();
    out += '[';
    for (std::size_t i = 0; i < it.accounts.size(); ++i) {
      const account& a = it.accounts[i];
      const account_template& t = account_templates[a.template_index];
      const currency_info& c = currencies[t.currency];
      if (i > 0) out += ',';
      out += '{';
      append_key(out, "account_id");
      append_string(out, a.account_id);
      out += R"(,"balances":{"available":)";
      if (std::string_view(t.type) == "credit") out += "null";
      else append_amount(out, a.available_minor, c.exponent);
      out += R"(,"current":)";
      append_amount(out, a.current_minor, c.exponent);
      out += R"(,"iso_currency_code":)";
      if (c.official) append_string(out, c.code);
      else out += "null";
      out += R"(,"limit":)";
      if (std::string_view(t.type) == "credit") append_amount(out, 2'000'000, c.exponent);
      else out += "null";
      out += R"(,"unofficial_currency_code":)";
      if (c.official) out += "null";
      else append_string(out, c.code);
      out += R"(},"mask":)";
      append_string(out, a.mask);
      out += R"(,"name":)";
      append_string(out, t.name);
      out += R"(,"official_name":)";
      if (t.official_name != nullptr) append_string(out, t.official_name);
      else out += "null";
      out += R"(,"subtype":)";
      append_string(out, t.subtype);
      out += R"(,"type":)";
      append_string(out, t.type);
      out += '}';
    }
    out += ']';
  }

  std::string serialise_transaction(const item& it, const transaction& t) const {
    const account& a = it.accounts[t.account];
    const currency_info& c = currencies[account_templates[a.template_index].currency];
    std::string out;
    out.reserve(1100);
    out += '{';
    append_key(out, "account_id");
    append_string(out, a.account_id);
    out += R"(,"account_owner":null,"amount":)";
    append_amount(out, t.amount_minor, c.exponent);
    out += R"(,"authorized_date":)";
    append_optional(out, t.authorized_days ? std::optional<std::string>(civil_from_days(*t.authorized_days)) : std::nullopt);
    out += R"(,"authorized_datetime":null,"check_number":null,"counterparties":[)";
    if (t.merchant_name) {
      out += R"({"confidence_level":"VERY_HIGH","entity_id":)";
      append_optional(out, t.merchant_entity_id);
      out += R"(,"logo_url":null,"name":)";
      append_string(out, *t.merchant_name);
      out += R"(,"type":"merchant","website":)";
      append_optional(out, t.website);
      out += '}';
    }
    out += R"(],"date":)";
    append_string(out, civil_from_days(t.date_days));
    out += R"(,"datetime":null,"iso_currency_code":)";
    if (c.official && !t.unofficial_currency_code) append_string(out, c.code);
    else out += "null";
    out += R"(,"location":{"address":null,"city":null,"country":null,"lat":null,"lon":null,"postal_code":null,"region":null,"store_number":null},"logo_url":null,"merchant_entity_id":)";
    append_optional(out, t.merchant_entity_id);
    out += R"(,"merchant_name":)";
    append_optional(out, t.merchant_name);
    out += R"(,"name":)";
    append_string(out, t.name);
    out += R"(,"payment_channel":)";
    append_string(out, t.payment_channel);
    out += R"(,"payment_meta":{"by_order_of":null,"payee":null,"payer":null,"payment_method":null,"payment_processor":null,"ppd_id":null,"reason":null,"reference_number":null},"pending":)";
    out += t.pending ? "true" : "false";
    out += R"(,"pending_transaction_id":)";
    append_optional(out, t.pending_transaction_id);
    out += R"(,"personal_finance_category":{"confidence_level":"VERY_HIGH","detailed":)";
    append_string(out, t.category_detailed);
    out += R"(,"primary":)";
    append_string(out, t.category_primary);
    out += R"(},"personal_finance_category_icon_url":)";
    append_string(out, "https://plaid-category-icons.plaid.com/PFC_" + t.category_primary + ".png");
    out += R"(,"transaction_code":null,"transaction_id":)";
    append_string(out, t.transaction_id);
    out += R"(,"transaction_type":)";
    append_string(out, t.transaction_type);
    out += R"(,"unofficial_currency_code":)";
    if (t.unofficial_currency_code) append_string(out, *t.unofficial_currency_code);
    else if (c.official) out += "null";
    else append_string(out, c.code);
    out += R"(,"website":)";
    append_optional(out, t.website);
    out += '}';
    return out;
  }

  std::string fresh_transaction_id(item& it) {
    for (;;) {
      std::string id = random_base62(it.random, 37);
      if (!it.live.contains(id)) return id;
    }
  }

  transaction generate_transaction(item& it) {
    transaction t;
    t.transaction_id = fresh_transaction_id(it);
    unsigned pick = static_cast<unsigned>(it.random.below(100));
    for (std::uint32_t i = 0; i < account_templates.size(); ++i) {
      if (pick < account_templates[i].weight) {
        t.account = i;
        break;
      }
      pick -= account_templates[i].weight;
    }
    const merchant& m = merchants[it.random.below(merchants.size())];
    const currency_info& c = currencies[account_templates[it.accounts[t.account].template_index].currency];
    const std::int64_t cents = it.random.between(m.low_cents, m.high_cents);
    std::int64_t minor = std::max<std::int64_t>(1, cents * c.per_usd_cent_num / c.per_usd_cent_den);
    t.amount_minor = m.inflow ? -minor : minor;
    const auto days_back = static_cast<std::int32_t>(it.random.below(history_span_days));
    t.date_days = history_end_days - days_back;
    // Recent card spending is still pending, as at a real bank.
    t.pending = days_back <= 2 && it.random.below(2) == 0;
    if (it.random.below(10) < 8) t.authorized_days = t.date_days - static_cast<std::int32_t>(it.random.below(3));
    t.name = m.name;
    if (m.merchant_name != nullptr) {
      t.merchant_name = m.merchant_name;
      rng entity{mix(settings.seed, fnv1a(m.merchant_name))};
      t.merchant_entity_id = random_base62(entity, 37);
    }
    if (m.website != nullptr) t.website = m.website;
    t.category_primary = m.primary;
    t.category_detailed = m.detailed;
    t.payment_channel = m.channel;
    t.transaction_type = m.transaction_type;
    // Plaid quirk: a posted transaction's pending_transaction_id may name a pending transaction
    // this client never received (it was replaced before the first sync). Receivers must cope.
    if (!t.pending && it.random.below(10) == 0) t.pending_transaction_id = random_base62(it.random, 37);
    return t;
  }

  void append_change(item& it, change_kind kind, const transaction& t) {
    if (kind == change_kind::removed) {
      std::string removed = R"({"account_id":)";
      append_string(removed, it.accounts[t.account].account_id);
      removed += R"(,"transaction_id":)";
      append_string(removed, t.transaction_id);
      removed += '}';
      it.snapshots.push_back(std::move(removed));
    } else {
      it.snapshots.push_back(serialise_transaction(it, t));
    }
    it.log.push_back(change{kind, static_cast<std::uint32_t>(it.snapshots.size() - 1)});
  }

  std::optional<failure> generate_history(item& it, std::size_t count) {
    if (count > limits::transactions_per_call_max) {
      return failure{"INVALID_FIELD", "count is larger than transactions_per_call_max (" +
                                          std::to_string(limits::transactions_per_call_max) + ")"};
    }
    if (transactions_total + count > limits::transactions_total_max) {
      return failure{"INVALID_FIELD", "the simulator would hold more than transactions_total_max (" +
                                          std::to_string(limits::transactions_total_max) + ") transactions"};
    }
    std::vector<transaction> batch;
    batch.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      batch.push_back(generate_transaction(it));
      it.live.emplace(batch.back().transaction_id, batch.back());  // reserves the id
    }
    // History arrives oldest first.
    std::stable_sort(batch.begin(), batch.end(),
                     [](const transaction& a, const transaction& b) { return a.date_days < b.date_days; });
    it.snapshots.reserve(it.snapshots.size() + count);
    it.log.reserve(it.log.size() + count);
    for (const transaction& t : batch) append_change(it, change_kind::added, t);
    transactions_total += count;
    return std::nullopt;
  }

  std::variant<std::size_t, failure> create_item(std::string institution_id, std::optional<std::string> webhook,
                                                 std::size_t transactions) {
    if (items.size() >= limits::items_max) {
      return failure{"INVALID_FIELD", "the simulator holds items_max (" + std::to_string(limits::items_max) + ") items"};
    }
    item it;
    it.random = rng{mix(settings.seed, items.size() + 1)};
    it.item_id = random_base62(it.random, 37);
    it.access_token = "access-sandbox-" + random_uuid(it.random);
    it.institution_id = std::move(institution_id);
    it.webhook = std::move(webhook);
    for (std::size_t i = 0; i < account_templates.size(); ++i) {
      account a;
      a.account_id = random_base62(it.random, 37);
      a.mask = std::to_string(1000 + it.random.below(9000));
      a.template_index = i;
      const currency_info& c = currencies[account_templates[i].currency];
      a.current_minor = it.random.between(10'000, 2'500'000) * c.per_usd_cent_num / c.per_usd_cent_den;
      a.available_minor = a.current_minor - a.current_minor / 10;
      it.accounts.push_back(std::move(a));
    }
    serialise_accounts(it);
    if (auto failed = generate_history(it, transactions)) return *failed;
    const std::size_t index = items.size();
    items_by_token.emplace(it.access_token, index);
    items_by_id.emplace(it.item_id, index);
    items.push_back(std::move(it));
    return index;
  }

  // -------------------------------------------------------------------------------------------
  // Cursors: base64 of "<item_id>:<position>:<bound>:<page>". Opaque to clients, like Plaid's.

  std::string encode_cursor(const item& it, const cursor& c) const {
    return base64_encode(it.item_id + ":" + std::to_string(c.position) + ":" + std::to_string(c.bound) + ":" +
                         std::to_string(c.page));
  }

  std::variant<cursor, failure> decode_cursor(const item& it, std::string_view text) const {
    const failure malformed{"INVALID_FIELD", "cursor is malformed"};
    if (text.size() > limits::cursor_bytes_max) return malformed;
    const auto decoded = base64_decode(text);
    if (!decoded) return malformed;
    std::array<std::string_view, 4> parts;
    std::string_view rest = *decoded;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const std::size_t colon = rest.find(':');
      if ((colon == std::string_view::npos) != (i == parts.size() - 1)) return malformed;
      parts[i] = rest.substr(0, colon);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
    if (parts[0] != it.item_id) return failure{"INVALID_FIELD", "cursor not associated with access_token"};
    cursor c;
    const auto number = [](std::string_view t, auto& out) {
      return !t.empty() && std::from_chars(t.data(), t.data() + t.size(), out).ec == std::errc{} &&
             std::from_chars(t.data(), t.data() + t.size(), out).ptr == t.data() + t.size();
    };
    if (!number(parts[1], c.position) || !number(parts[2], c.bound) || !number(parts[3], c.page)) return malformed;
    if (c.position > c.bound || c.bound > it.log.size()) return malformed;
    return c;
  }

  // -------------------------------------------------------------------------------------------
  // Bookkeeping.

  void record(std::string_view endpoint, std::string_view item_id, const reply& r) {
    if (calls.size() >= limits::calls_recorded_max) {
      ++calls_dropped;
      return;
    }
    call_record c;
    c.sequence = ++call_sequence;
    c.endpoint = std::string(endpoint);
    c.item_id = std::string(item_id);
    c.status = r.status;
    if (r.status != 200 && r.shape == reply_shape::normal) {
      // Read the code back from our own error body (it is always the fourth field we write).
      const std::size_t at = r.body.find(R"("error_code":")");
      if (at != std::string::npos) {
        const std::size_t start = at + 14;
        c.error_code = r.body.substr(start, r.body.find('"', start) - start);
      }
    }
    calls.push_back(std::move(c));
  }

  // The first armed fault for this call, consumed.
  std::optional<fault> take_fault(std::string_view endpoint, std::string_view item_id, std::uint32_t page) {
    for (auto it = faults.begin(); it != faults.end(); ++it) {
      if (!it->endpoint.empty() && it->endpoint != endpoint) continue;
      if (!it->item_id.empty() && it->item_id != item_id) continue;
      if (it->page != 0 && it->page != page) continue;
      fault taken = *it;
      if (--it->remaining <= 0) faults.erase(it);
      return taken;
    }
    return std::nullopt;
  }

  // Applies a fault to the reply the call would have had.
  reply apply_fault(const fault& f, std::string_view endpoint, reply normal) {
    reply r = f.error_code.empty() ? std::move(normal)
                                   : error_reply(f.error_code == "RATE_LIMIT_EXCEEDED" ? rate_limit_code_for(endpoint)
                                                                                       : std::string_view(f.error_code));
    r.delay = std::chrono::milliseconds(f.delay_ms);
    if (f.shape != reply_shape::normal) r.shape = f.shape;
    if (r.shape == reply_shape::malformed) {
      // Plausible-looking but broken JSON: the real body cut short and a stray brace.
      r.body = r.body.substr(0, r.body.size() * 2 / 3) + "}{\"added\":[";
    }
    return r;
  }

  // -------------------------------------------------------------------------------------------
  // Rate limits: a sliding 60 s window of accepted calls, no longer than the limit itself.

  static bool window_full(std::deque<std::int64_t>& window, std::uint32_t limit, std::int64_t now_s) {
    if (limit == 0) return false;
    while (!window.empty() && window.front() <= now_s - 60) window.pop_front();
    return window.size() >= limit;
  }

  std::optional<reply> check_sync_rate(item& it, std::int64_t now_s) {
    if (window_full(it.sync_calls_s, settings.sync_calls_per_item_per_min, now_s)) {
      return error_reply("TRANSACTIONS_SYNC_LIMIT", "rate limit exceeded for attempts to access /transactions/sync for this item (" +
                                                        std::to_string(settings.sync_calls_per_item_per_min) + " per minute); please try again later");
    }
    if (window_full(client_sync_calls_s, settings.sync_calls_per_client_per_min, now_s)) {
      return error_reply("TRANSACTIONS_SYNC_LIMIT", "rate limit exceeded for /transactions/sync across this client (" +
                                                        std::to_string(settings.sync_calls_per_client_per_min) + " per minute); please try again later");
    }
    if (settings.sync_calls_per_item_per_min != 0) it.sync_calls_s.push_back(now_s);
    if (settings.sync_calls_per_client_per_min != 0) client_sync_calls_s.push_back(now_s);
    return std::nullopt;
  }

  // -------------------------------------------------------------------------------------------
  // Plaid endpoints.

  // `item_id` is set whenever the token names an item, removed or not, for the call record.
  std::variant<std::size_t, failure> item_for_token(simdjson::dom::object body, std::string& item_id) {
    std::string_view token;
    const field state = read_string(body, "access_token", token);
    if (state == field::missing) return failure{"MISSING_FIELDS", "the following required fields are missing: access_token"};
    if (state == field::wrong_type) return failure{"INVALID_FIELD", "access_token must be a string"};
    const auto found = items_by_token.find(std::string(token));
    if (found == items_by_token.end()) return failure{"INVALID_ACCESS_TOKEN", {}};
    item_id = items[found->second].item_id;
    if (items[found->second].removed) return failure{"ITEM_NOT_FOUND", {}};
    return found->second;
  }

  reply sandbox_public_token_create(simdjson::dom::object body, std::int64_t now_s, std::string& item_id) {
    std::string_view institution;
    if (read_string(body, "institution_id", institution) != field::ok) {
      return error_reply("MISSING_FIELDS", "the following required fields are missing: institution_id");
    }
    simdjson::dom::array products;
    if (body.at_key("initial_products").get(products) != simdjson::SUCCESS || products.size() == 0) {
      return error_reply("MISSING_FIELDS", "the following required fields are missing: initial_products");
    }
    for (auto product : products) {
      std::string_view name;
      if (product.get_string().get(name) != simdjson::SUCCESS) return error_reply("INVALID_FIELD", "initial_products must be strings");
      if (name != "transactions" && name != "auth" && name != "balance" && name != "identity") {
        return error_reply("INVALID_PRODUCT", "product '" + std::string(name.substr(0, 64)) + "' is not simulated");
      }
    }
    std::optional<std::string> webhook;
    simdjson::dom::object options;
    if (body.at_key("options").get(options) == simdjson::SUCCESS) {
      std::string_view url;
      if (read_string(options, "webhook", url) == field::ok) webhook = std::string(url);
    }
    auto created = create_item(std::string(institution), webhook, settings.transactions_per_item);
    if (auto* failed = std::get_if<failure>(&created)) return error_reply(*failed);
    const std::size_t index = std::get<std::size_t>(created);
    item_id = items[index].item_id;
    const std::string token = "public-sandbox-" + random_uuid(random);
    public_tokens.emplace(token, public_token{index, now_s + settings.public_token_ttl.count(), false});
    reply r;
    r.body = R"({"public_token":)";
    append_string(r.body, token);
    r.body += R"(,"request_id":)";
    append_string(r.body, next_request_id());
    r.body += '}';
    return r;
  }

  reply item_public_token_exchange(simdjson::dom::object body, std::int64_t now_s, std::string& item_id) {
    std::string_view token;
    const field state = read_string(body, "public_token", token);
    if (state == field::missing) return error_reply("MISSING_FIELDS", "the following required fields are missing: public_token");
    if (state == field::wrong_type) return error_reply("INVALID_FIELD", "public_token must be a string");
    const auto found = public_tokens.find(std::string(token));
    if (found == public_tokens.end()) return error_reply("INVALID_PUBLIC_TOKEN", "provided public token is in an invalid format or does not exist");
    public_token& pt = found->second;
    item_id = items[pt.item].item_id;
    if (pt.used) return error_reply("INVALID_PUBLIC_TOKEN", "provided public token has already been exchanged; public tokens are single-use");
    if (now_s >= pt.expires_at_s) return error_reply("INVALID_PUBLIC_TOKEN", "provided public token is expired; public tokens expire 30 minutes after creation");
    if (items[pt.item].removed) return error_reply("ITEM_NOT_FOUND");
    pt.used = true;
    reply r;
    r.body = R"({"access_token":)";
    append_string(r.body, items[pt.item].access_token);
    r.body += R"(,"item_id":)";
    append_string(r.body, items[pt.item].item_id);
    r.body += R"(,"request_id":)";
    append_string(r.body, next_request_id());
    r.body += '}';
    return r;
  }

  reply accounts_get(const item& it) {
    reply r;
    r.body = R"({"accounts":)";
    r.body += it.accounts_json;
    r.body += R"(,"item":{"available_products":["balance","identity"],"billed_products":["transactions"],"consent_expiration_time":null,"error":null,"institution_id":)";
    append_string(r.body, it.institution_id);
    r.body += R"(,"item_id":)";
    append_string(r.body, it.item_id);
    r.body += R"(,"products":["transactions"],"update_type":"background","webhook":)";
    append_string(r.body, it.webhook.value_or(""));
    r.body += R"(},"request_id":)";
    append_string(r.body, next_request_id());
    r.body += '}';
    return r;
  }

  // Works out which page of which pagination this call asks for, without serving it yet, so a
  // fault can be aimed at "page k".
  std::variant<std::pair<cursor, std::size_t>, failure> plan_sync(const item& it, simdjson::dom::object body) {
    std::int64_t count = limits::sync_count_default;
    const field count_state = read_int(body, "count", count);
    if (count_state == field::wrong_type) return failure{"INVALID_FIELD", "count must be an integer"};
    if (count < 1 || count > limits::sync_count_max) {
      return failure{"INVALID_FIELD", "count must be between 1 and " + std::to_string(limits::sync_count_max)};
    }
    std::string_view text;
    const field cursor_state = read_string(body, "cursor", text);
    if (cursor_state == field::wrong_type) return failure{"INVALID_FIELD", "cursor must be a string"};
    cursor c;
    if (cursor_state == field::missing || text.empty()) {
      c = cursor{0, it.log.size(), 0};  // the whole history
    } else if (text == "now") {
      c = cursor{it.log.size(), it.log.size(), 0};  // Plaid: skip history, only later updates
    } else {
      auto decoded = decode_cursor(it, text);
      if (auto* failed = std::get_if<failure>(&decoded)) return *failed;
      c = std::get<cursor>(decoded);
      if (c.position < c.bound) {
        // Mid-pagination: any update since the first page invalidates the pages still to come.
        if (it.log.size() != c.bound) return failure{"TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION", {}};
      } else {
        c = cursor{c.position, it.log.size(), 0};  // a finished pagination: start the next one
      }
    }
    ++c.page;
    return std::pair{c, static_cast<std::size_t>(count)};
  }

  reply transactions_sync(const item& it, cursor c, std::size_t count) {
    const std::size_t end = std::min(c.bound, c.position + count);
    const bool has_more = end < c.bound;
    std::size_t bytes = it.accounts_json.size() + 512;
    for (std::size_t i = c.position; i < end; ++i) bytes += it.snapshots[it.log[i].snapshot].size() + 1;
    reply r;
    std::string& out = r.body;
    out.reserve(bytes);
    out += R"({"accounts":)";
    out += it.accounts_json;
    static constexpr std::array<std::pair<change_kind, std::string_view>, 3> lists{
        {{change_kind::added, R"(,"added":[)"}, {change_kind::modified, R"(],"modified":[)"},
         {change_kind::removed, R"(],"removed":[)"}}};
    for (const auto& [kind, opening] : lists) {
      out += opening;
      bool first = true;
      for (std::size_t i = c.position; i < end; ++i) {
        if (it.log[i].kind != kind) continue;
        if (!first) out += ',';
        first = false;
        out += it.snapshots[it.log[i].snapshot];
      }
    }
    out += R"(],"has_more":)";
    out += has_more ? "true" : "false";
    out += R"(,"next_cursor":)";
    const cursor next = has_more ? cursor{end, c.bound, c.page} : cursor{end, end, 0};
    append_string(out, encode_cursor(it, next));
    out += R"(,"request_id":)";
    append_string(out, next_request_id());
    out += R"(,"transactions_update_status":"HISTORICAL_UPDATE_COMPLETE"})";
    return r;
  }

  reply item_remove(item& it) {
    it.removed = true;
    reply r;
    r.body = R"({"request_id":)";
    append_string(r.body, next_request_id());
    r.body += '}';
    return r;
  }

  reply webhook_verification_key_get(simdjson::dom::object body) {
    std::string_view kid;
    const field state = read_string(body, "key_id", kid);
    if (state == field::missing) return error_reply("MISSING_FIELDS", "the following required fields are missing: key_id");
    if (state == field::wrong_type) return error_reply("INVALID_FIELD", "key_id must be a string");
    const auto jwk = signer.jwk_json(kid);
    if (!jwk) return error_reply("INVALID_FIELD", "key_id not found");
    reply r;
    r.body = R"({"key":)" + *jwk + R"(,"request_id":)";
    append_string(r.body, next_request_id());
    r.body += '}';
    return r;
  }

  reply plaid_call(const request_view& request, simdjson::dom::object body, std::int64_t now_s) {
    const std::string_view endpoint = request.path;
    std::string item_id;
    const auto finish = [&](reply r) {
      record(endpoint, item_id, r);
      return r;
    };
    // Credentials: the body's fields win over the headers, as in Plaid's client libraries.
    std::string_view client_id = request.client_id_header;
    std::string_view secret = request.secret_header;
    std::string_view from_body;
    if (read_string(body, "client_id", from_body) == field::ok) client_id = from_body;
    if (read_string(body, "secret", from_body) == field::ok) secret = from_body;
    if (client_id.empty() || secret.empty()) {
      return finish(error_reply("MISSING_FIELDS", "the following required fields are missing: client_id, secret"));
    }
    if (client_id != settings.client_id || secret != settings.secret) return finish(error_reply("INVALID_API_KEYS"));

    if (endpoint == "/sandbox/public_token/create") {
      reply r = sandbox_public_token_create(body, now_s, item_id);
      if (auto f = take_fault(endpoint, item_id, 0)) r = apply_fault(*f, endpoint, std::move(r));
      return finish(std::move(r));
    }
    if (endpoint == "/item/public_token/exchange") {
      // A fault here must not burn the token: the client will retry the exchange.
      if (auto f = take_fault(endpoint, "", 0); f && !f->error_code.empty()) return finish(apply_fault(*f, endpoint, {}));
      else if (f) return finish(apply_fault(*f, endpoint, item_public_token_exchange(body, now_s, item_id)));
      return finish(item_public_token_exchange(body, now_s, item_id));
    }
    if (endpoint == "/webhook_verification_key/get") {
      if (auto f = take_fault(endpoint, "", 0)) return finish(apply_fault(*f, endpoint, webhook_verification_key_get(body)));
      return finish(webhook_verification_key_get(body));
    }

    auto found = item_for_token(body, item_id);
    if (auto* failed = std::get_if<failure>(&found)) return finish(error_reply(*failed));
    item& it = items[std::get<std::size_t>(found)];

    if (endpoint == "/accounts/get") {
      if (auto f = take_fault(endpoint, item_id, 0)) return finish(apply_fault(*f, endpoint, accounts_get(it)));
      return finish(accounts_get(it));
    }
    if (endpoint == "/item/remove") {
      if (auto f = take_fault(endpoint, item_id, 0)) {
        return finish(f->error_code.empty() ? apply_fault(*f, endpoint, item_remove(it)) : apply_fault(*f, endpoint, {}));
      }
      return finish(item_remove(it));
    }
    // /transactions/sync
    if (auto limited = check_sync_rate(it, now_s)) return finish(std::move(*limited));
    auto planned = plan_sync(it, body);
    if (auto* failed = std::get_if<failure>(&planned)) return finish(error_reply(*failed));
    const auto [c, count] = std::get<std::pair<cursor, std::size_t>>(planned);
    if (auto f = take_fault(endpoint, item_id, c.page)) {
      return finish(f->error_code.empty() ? apply_fault(*f, endpoint, transactions_sync(it, c, count))
                                          : apply_fault(*f, endpoint, {}));
    }
    return finish(transactions_sync(it, c, count));
  }

  // -------------------------------------------------------------------------------------------
  // Control API (/sim/…): tests and the demo only. Answers are JSON; failures use Plaid's error
  // object too, so one client helper reads both.

  std::variant<std::size_t, failure> item_from_selector(simdjson::dom::object body) {
    std::string_view text;
    if (read_string(body, "access_token", text) == field::ok) {
      const auto found = items_by_token.find(std::string(text));
      if (found == items_by_token.end()) return failure{"INVALID_ACCESS_TOKEN", {}};
      return found->second;
    }
    if (read_string(body, "item_id", text) == field::ok) {
      const auto found = items_by_id.find(std::string(text));
      if (found == items_by_id.end()) return failure{"ITEM_NOT_FOUND", {}};
      return found->second;
    }
    return failure{"MISSING_FIELDS", "the following required fields are missing: access_token or item_id"};
  }

  std::string item_summary(const item& it) const {
    std::string out = "{";
    append_key(out, "access_token");
    append_string(out, it.access_token);
    out += R"(,"accounts":[)";
    for (std::size_t i = 0; i < it.accounts.size(); ++i) {
      if (i > 0) out += ',';
      out += R"({"account_id":)";
      append_string(out, it.accounts[i].account_id);
      out += R"(,"currency":)";
      append_string(out, currencies[account_templates[it.accounts[i].template_index].currency].code);
      out += '}';
    }
    out += R"(],"item_id":)";
    append_string(out, it.item_id);
    out += R"(,"log_length":)" + std::to_string(it.log.size());
    out += R"(,"removed":)";
    out += it.removed ? "true" : "false";
    out += R"(,"transactions":)" + std::to_string(it.live.size());
    out += R"(,"webhook":)";
    append_optional(out, it.webhook);
    out += '}';
    return out;
  }

  reply control_items() {
    reply r;
    r.body = R"({"items":[)";
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i > 0) r.body += ',';
      r.body += item_summary(items[i]);
    }
    r.body += "]}";
    return r;
  }

  reply control_items_create(simdjson::dom::object body) {
    std::int64_t count = 1, transactions = static_cast<std::int64_t>(settings.transactions_per_item);
    if (read_int(body, "count", count) == field::wrong_type || count < 1 || count > static_cast<std::int64_t>(limits::items_max)) {
      return error_reply("INVALID_FIELD", "count must be between 1 and items_max");
    }
    if (read_int(body, "transactions", transactions) == field::wrong_type || transactions < 0 ||
        transactions > static_cast<std::int64_t>(limits::transactions_per_call_max)) {
      return error_reply("INVALID_FIELD", "transactions must be between 0 and transactions_per_call_max");
    }
    std::optional<std::string> webhook;
    std::string_view url;
    if (read_string(body, "webhook", url) == field::ok) webhook = std::string(url);
    reply r;
    r.body = R"({"items":[)";
    for (std::int64_t i = 0; i < count; ++i) {
      auto created = create_item("ins_109508", webhook, static_cast<std::size_t>(transactions));
      if (auto* failed = std::get_if<failure>(&created)) return error_reply(*failed);
      if (i > 0) r.body += ',';
      r.body += item_summary(items[std::get<std::size_t>(created)]);
    }
    r.body += "]}";
    return r;
  }

  reply control_truth(const item& it) {
    std::vector<const transaction*> sorted;
    sorted.reserve(it.live.size());
    for (const auto& [id, t] : it.live) sorted.push_back(&t);
    std::sort(sorted.begin(), sorted.end(),
              [](const transaction* a, const transaction* b) { return a->transaction_id < b->transaction_id; });
    reply r;
    r.body.reserve(sorted.size() * 1100 + 64);
    r.body = R"({"transactions":[)";
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      if (i > 0) r.body += ',';
      r.body += serialise_transaction(it, *sorted[i]);
    }
    r.body += "]}";
    return r;
  }

  reply transaction_reply(const item& it, const transaction& t, std::string_view extra = {}) {
    reply r;
    r.body = R"({"transaction":)" + serialise_transaction(it, t);
    r.body += extra;
    r.body += '}';
    return r;
  }

  // Reads the optional editable fields of a transaction from a control call.
  std::optional<failure> read_edits(simdjson::dom::object body, item& it, transaction& t) {
    std::int64_t amount = 0;
    if (const field f = read_int(body, "amount_minor", amount); f == field::wrong_type) {
      return failure{"INVALID_FIELD", "amount_minor must be an integer (Plaid's sign: positive is money out)"};
    } else if (f == field::ok) {
      t.amount_minor = amount;
    }
    std::string_view text;
    if (read_string(body, "account_id", text) == field::ok) {
      const auto found = std::find_if(it.accounts.begin(), it.accounts.end(),
                                      [&](const account& a) { return a.account_id == text; });
      if (found == it.accounts.end()) return failure{"INVALID_FIELD", "account_id is not an account of this item"};
      t.account = static_cast<std::uint32_t>(found - it.accounts.begin());
    }
    if (read_string(body, "name", text) == field::ok) t.name = std::string(text);
    if (read_string(body, "merchant_name", text) == field::ok) t.merchant_name = std::string(text);
    if (read_string(body, "date", text) == field::ok) {
      const auto days = parse_date(text);
      if (!days) return failure{"INVALID_FIELD", "date must be YYYY-MM-DD"};
      t.date_days = *days;
    }
    bool pending = false;
    if (read_bool(body, "pending", pending) == field::ok) t.pending = pending;
    if (read_string(body, "unofficial_currency_code", text) == field::ok) {
      const bool valid = !text.empty() && text.size() <= 8 &&
                         std::all_of(text.begin(), text.end(), [](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'); });
      if (!valid) return failure{"INVALID_FIELD", "unofficial_currency_code must be 1..8 of A-Z 0-9"};
      t.unofficial_currency_code = std::string(text);
    }
    return std::nullopt;
  }

  reply control_transactions(std::string_view action, simdjson::dom::object body) {
    auto found = item_from_selector(body);
    if (auto* failed = std::get_if<failure>(&found)) return error_reply(*failed);
    item& it = items[std::get<std::size_t>(found)];

    if (action == "truth") return control_truth(it);
    if (action == "generate") {
      std::int64_t count = 0;
      if (read_int(body, "count", count) != field::ok || count < 1) return error_reply("INVALID_FIELD", "count must be a positive integer");
      if (auto failed = generate_history(it, static_cast<std::size_t>(count))) return error_reply(*failed);
      reply r;
      r.body = R"({"log_length":)" + std::to_string(it.log.size()) + "}";
      return r;
    }
    if (action == "add") {
      if (transactions_total >= limits::transactions_total_max) return error_reply("INVALID_FIELD", "transactions_total_max reached");
      transaction t = generate_transaction(it);
      t.pending_transaction_id.reset();
      if (auto failed = read_edits(body, it, t)) return error_reply(*failed);
      it.live.emplace(t.transaction_id, t);
      ++transactions_total;
      append_change(it, change_kind::added, t);
      return transaction_reply(it, t);
    }

    std::string_view id;
    if (read_string(body, "transaction_id", id) != field::ok) {
      return error_reply("MISSING_FIELDS", "the following required fields are missing: transaction_id");
    }
    const auto live = it.live.find(std::string(id));
    if (live == it.live.end()) return error_reply("INVALID_FIELD", "transaction_id is not a live transaction of this item");

    if (action == "modify") {
      transaction t = live->second;
      if (auto failed = read_edits(body, it, t)) return error_reply(*failed);
      live->second = t;
      append_change(it, change_kind::modified, t);
      return transaction_reply(it, t);
    }
    if (action == "remove") {
      const transaction t = live->second;
      it.live.erase(live);
      --transactions_total;
      append_change(it, change_kind::removed, t);
      reply r;
      r.body = R"({"removed":)";
      append_string(r.body, t.transaction_id);
      r.body += '}';
      return r;
    }
    if (action == "post") {
      // Plaid: a pending transaction is never modified into a posted one. The pending id is
      // removed and a new posted transaction is added that names it in pending_transaction_id.
      if (!live->second.pending) return error_reply("INVALID_FIELD", "transaction is not pending");
      const transaction pending = live->second;
      transaction posted = pending;
      posted.transaction_id = fresh_transaction_id(it);
      posted.pending = false;
      posted.pending_transaction_id = pending.transaction_id;
      posted.authorized_days = pending.authorized_days.value_or(pending.date_days);
      posted.date_days = pending.date_days + 1;
      if (auto failed = read_edits(body, it, posted)) return error_reply(*failed);
      posted.pending = false;
      bool added_first = false;
      read_bool(body, "added_first", added_first);
      it.live.erase(live);
      it.live.emplace(posted.transaction_id, posted);
      // Plaid gives no order between the two; the removal comes first unless asked otherwise.
      if (added_first) append_change(it, change_kind::added, posted);
      append_change(it, change_kind::removed, pending);
      if (!added_first) append_change(it, change_kind::added, posted);
      std::string extra = R"(,"removed":)";
      append_string(extra, pending.transaction_id);
      return transaction_reply(it, posted, extra);
    }
    return error_reply("NOT_FOUND", "unknown control call");
  }

  reply control_faults(simdjson::dom::object body) {
    if (faults.size() >= limits::faults_max) return error_reply("INVALID_FIELD", "faults_max armed faults reached");
    fault f;
    f.id = next_fault_id++;
    std::string_view text;
    if (read_string(body, "endpoint", text) == field::ok) {
      if (!is_plaid_endpoint(text)) return error_reply("INVALID_FIELD", "endpoint is not a simulated Plaid endpoint");
      f.endpoint = std::string(text);
    }
    if (read_string(body, "item_id", text) == field::ok) f.item_id = std::string(text);
    if (read_string(body, "access_token", text) == field::ok) {
      const auto found = items_by_token.find(std::string(text));
      if (found == items_by_token.end()) return error_reply("INVALID_ACCESS_TOKEN");
      f.item_id = items[found->second].item_id;
    }
    std::int64_t number = 0;
    if (read_int(body, "page", number) == field::ok) {
      if (number < 1 || number > 1'000'000) return error_reply("INVALID_FIELD", "page must be at least 1");
      f.page = static_cast<std::uint32_t>(number);
      if (f.endpoint.empty()) f.endpoint = "/transactions/sync";
    }
    if (read_int(body, "times", number) == field::ok) {
      if (number < 1 || number > limits::fault_times_max) return error_reply("INVALID_FIELD", "times must be between 1 and fault_times_max");
      f.remaining = number;
    }
    if (read_string(body, "error_code", text) == field::ok) {
      if (text != "RATE_LIMIT_EXCEEDED" && find_error(text) == nullptr) return error_reply("INVALID_FIELD", "unknown error_code");
      f.error_code = std::string(text);
    }
    if (read_int(body, "delay_ms", number) == field::ok) {
      if (number < 0 || number > limits::fault_delay_ms_max) return error_reply("INVALID_FIELD", "delay_ms must be between 0 and fault_delay_ms_max");
      f.delay_ms = number;
    }
    if (read_string(body, "body", text) == field::ok) {
      if (text == "truncated") f.shape = reply_shape::truncated;
      else if (text == "malformed") f.shape = reply_shape::malformed;
      else return error_reply("INVALID_FIELD", "body must be truncated or malformed");
    }
    if (f.error_code.empty() && f.delay_ms == 0 && f.shape == reply_shape::normal) {
      return error_reply("MISSING_FIELDS", "a fault needs error_code, delay_ms or body");
    }
    faults.push_back(f);
    reply r;
    r.body = R"({"fault_id":)" + std::to_string(f.id) + "}";
    return r;
  }

  reply control_calls(simdjson::dom::object body) {
    std::string_view endpoint, item_id;
    const bool by_endpoint = read_string(body, "endpoint", endpoint) == field::ok;
    const bool by_item = read_string(body, "item_id", item_id) == field::ok;
    reply r;
    r.body = R"({"calls":[)";
    bool first = true;
    for (const call_record& c : calls) {
      if (by_endpoint && c.endpoint != endpoint) continue;
      if (by_item && c.item_id != item_id) continue;
      if (!first) r.body += ',';
      first = false;
      r.body += R"({"endpoint":)";
      append_string(r.body, c.endpoint);
      r.body += R"(,"error_code":)";
      append_optional(r.body, c.error_code.empty() ? std::nullopt : std::optional<std::string>(c.error_code));
      r.body += R"(,"item_id":)";
      append_optional(r.body, c.item_id.empty() ? std::nullopt : std::optional<std::string>(c.item_id));
      r.body += R"(,"sequence":)" + std::to_string(c.sequence) + R"(,"status":)" + std::to_string(c.status) + "}";
    }
    r.body += R"(],"dropped":)" + std::to_string(calls_dropped) + "}";
    return r;
  }

  std::variant<webhook_delivery, failure> control_webhook_send(simdjson::dom::object body, std::int64_t now_s) {
    auto found = item_from_selector(body);
    if (auto* failed = std::get_if<failure>(&found)) return *failed;
    const item& it = items[std::get<std::size_t>(found)];
    webhook_delivery d;
    d.item_id = it.item_id;
    std::string_view text;
    if (read_string(body, "url", text) == field::ok) d.url = std::string(text);
    else if (it.webhook) d.url = *it.webhook;
    if (d.url.empty()) return failure{"MISSING_FIELDS", "no url given and the item has no webhook"};
    if (!d.url.starts_with("http://") && !d.url.starts_with("https://")) return failure{"INVALID_FIELD", "url must be http(s)"};
    d.webhook_code = "SYNC_UPDATES_AVAILABLE";
    if (read_string(body, "webhook_code", text) == field::ok) d.webhook_code = std::string(text);
    signing_mode mode = signing_mode::valid;
    if (read_string(body, "signing", text) == field::ok) {
      const auto parsed = parse_signing_mode(text);
      if (!parsed) return failure{"INVALID_FIELD", "signing must be valid, wrong_key, unknown_kid, expired_key, stale_iat, alg_none or alg_hs256"};
      mode = *parsed;
    }
    // Plaid sends its webhook bodies pretty-printed; the hash covers these exact bytes, so a
    // receiver that re-serialises before hashing fails here as it would in production.
    std::string& out = d.body;
    if (d.webhook_code == "SYNC_UPDATES_AVAILABLE") {
      out = "{\n  \"environment\": \"sandbox\",\n  \"historical_update_complete\": true,\n"
            "  \"initial_update_complete\": true,\n  \"item_id\": ";
      append_string(out, it.item_id);
      out += ",\n  \"webhook_code\": \"SYNC_UPDATES_AVAILABLE\",\n  \"webhook_type\": \"TRANSACTIONS\"\n}";
    } else if (d.webhook_code == "ERROR") {
      std::string code = "ITEM_LOGIN_REQUIRED";
      if (read_string(body, "error_code", text) == field::ok) code = std::string(text);
      const error_definition* definition = find_error(code);
      if (definition == nullptr) return failure{"INVALID_FIELD", "unknown error_code"};
      out = "{\n  \"environment\": \"sandbox\",\n  \"error\": {\n    \"display_message\": ";
      if (definition->display.empty()) out += "null";
      else append_string(out, definition->display);
      out += ",\n    \"error_code\": ";
      append_string(out, definition->code);
      out += ",\n    \"error_message\": ";
      append_string(out, definition->message);
      out += ",\n    \"error_type\": ";
      append_string(out, definition->type);
      out += ",\n    \"status\": " + std::to_string(definition->status) + "\n  },\n  \"item_id\": ";
      append_string(out, it.item_id);
      out += ",\n  \"webhook_code\": \"ERROR\",\n  \"webhook_type\": \"ITEM\"\n}";
    } else if (d.webhook_code == "USER_PERMISSION_REVOKED") {
      out = "{\n  \"environment\": \"sandbox\",\n  \"error\": {\n    \"display_message\": null,\n"
            "    \"error_code\": \"USER_PERMISSION_REVOKED\",\n    \"error_message\": \"the user has revoked their permission for this item\",\n"
            "    \"error_type\": \"ITEM_ERROR\",\n    \"status\": 400\n  },\n  \"item_id\": ";
      append_string(out, it.item_id);
      out += ",\n  \"webhook_code\": \"USER_PERMISSION_REVOKED\",\n  \"webhook_type\": \"ITEM\"\n}";
    } else {
      return failure{"INVALID_FIELD", "webhook_code must be SYNC_UPDATES_AVAILABLE, ERROR or USER_PERMISSION_REVOKED"};
    }
    d.verification = signer.sign(d.body, mode, now_s);
    bool alter_body = false;
    read_bool(body, "alter_body", alter_body);
    if (alter_body) {
      // Signed over the original bytes, delivered with one byte changed.
      const std::size_t at = d.body.find("sandbox");
      d.body.replace(at, 7, "sandbax");
    }
    return d;
  }

  reply control_webhook_inbox(const request_view& request) {
    if (webhooks_received.size() >= limits::webhooks_received_max) webhooks_received.pop_front();
    webhooks_received.push_back(received_webhook{std::string(request.verification_header), std::string(request.body)});
    reply r;
    r.body = "{}";
    return r;
  }

  reply control_webhooks_received() {
    reply r;
    r.body = R"({"webhooks":[)";
    bool first = true;
    for (const auto& w : webhooks_received) {
      if (!first) r.body += ',';
      first = false;
      r.body += R"({"body":)";
      append_string(r.body, w.body);
      r.body += R"(,"plaid_verification":)";
      append_string(r.body, w.verification);
      r.body += '}';
    }
    r.body += "]}";
    return r;
  }

  outcome control_call(const request_view& request, simdjson::dom::object body, std::int64_t now_s) {
    const std::string_view path = request.path;
    outcome o;
    if (path == "/sim/items") o.response = control_items();
    else if (path == "/sim/items/create") o.response = control_items_create(body);
    else if (path.starts_with("/sim/transactions/")) o.response = control_transactions(path.substr(18), body);
    else if (path == "/sim/faults") o.response = control_faults(body);
    else if (path == "/sim/faults/clear") {
      faults.clear();
      o.response.body = "{}";
    } else if (path == "/sim/calls") o.response = control_calls(body);
    else if (path == "/sim/calls/clear") {
      calls.clear();
      calls_dropped = 0;
      o.response.body = "{}";
    } else if (path == "/sim/webhooks/send") {
      auto prepared = control_webhook_send(body, now_s);
      if (auto* failed = std::get_if<failure>(&prepared)) o.response = error_reply(*failed);
      else o.webhook = std::move(std::get<webhook_delivery>(prepared));
    } else if (path == "/sim/webhooks/received") o.response = control_webhooks_received();
    else if (path == "/sim/webhooks/rotate_key") {
      o.response.body = R"({"kid":)";
      append_string(o.response.body, signer.rotate(now_s));
      o.response.body += '}';
    }
    else o.response = error_reply("NOT_FOUND", "unknown control call " + std::string(path.substr(0, 64)));
    return o;
  }
};

// =============================================================================================

simulator::simulator(simulator_settings settings, std::int64_t now_s)
    : state_(std::make_unique<state>(std::move(settings), now_s)) {
  std::lock_guard lock(state_->mutex);
  for (std::size_t i = 0; i < state_->settings.items_initial; ++i) {
    auto created = state_->create_item("ins_109508", std::nullopt, state_->settings.transactions_per_item);
    if (auto* failed = std::get_if<failure>(&created)) throw std::runtime_error("--items: " + failed->message);
  }
}

simulator::~simulator() = default;

outcome simulator::handle(const request_view& request, std::int64_t now_s) {
  std::lock_guard lock(state_->mutex);
  state& s = *state_;
  // The inbox takes any body: it stands in for someone else's webhook receiver.
  if (request.path == "/sim/webhooks/inbox") return outcome{s.control_webhook_inbox(request), std::nullopt};

  const bool plaid = is_plaid_endpoint(request.path);
  if (!plaid && !request.path.starts_with("/sim/")) {
    reply r = s.error_reply("NOT_FOUND", "unknown endpoint " + std::string(request.path.substr(0, 64)));
    s.record(request.path.substr(0, 64), "", r);
    return outcome{std::move(r), std::nullopt};
  }
  simdjson::dom::object body;
  const std::string_view text = request.body.empty() ? std::string_view("{}") : request.body;
  if (s.parser.parse(text.data(), text.size()).get(body) != simdjson::SUCCESS) {
    reply r = s.error_reply("INVALID_BODY");
    if (plaid) s.record(request.path, "", r);
    return outcome{std::move(r), std::nullopt};
  }
  if (plaid) return outcome{s.plaid_call(request, body, now_s), std::nullopt};
  return s.control_call(request, body, now_s);
}

reply simulator::delivered(const webhook_delivery& delivery, const delivery_result& result) {
  std::lock_guard lock(state_->mutex);
  state& s = *state_;
  reply r;
  r.body = R"({"body":)";
  append_string(r.body, delivery.body);
  r.body += R"(,"delivered":)";
  r.body += result.error.empty() ? "true" : "false";
  r.body += R"(,"error":)";
  append_optional(r.body, result.error.empty() ? std::nullopt : std::optional<std::string>(result.error));
  r.body += R"(,"plaid_verification":)";
  append_string(r.body, delivery.verification);
  r.body += R"(,"status":)" + std::to_string(result.status) + "}";
  reply recorded;
  recorded.status = static_cast<unsigned>(result.status);
  s.record("webhook:" + delivery.webhook_code, delivery.item_id, recorded);
  return r;
}

}  // namespace bankworker::sim::plaid
