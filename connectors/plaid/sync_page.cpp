#include "connectors/plaid/sync_page.hpp"

#include "connectors/plaid/amount.hpp"

namespace bankworker::plaid {

namespace {

using simdjson::ondemand::json_type;
using simdjson::ondemand::object;
using simdjson::ondemand::value;

// Thrown inside the parser only, turned into page_result::error at its boundary.
struct bad_page {
  std::string reason;
};

// Where a value sits in the page, such as added[3].balances.current: a name, an element's index
// (npos outside an array) and a field below it. The text is put together only when an error is
// thrown; building it for every field of every row cost allocations per field.
class where {
 public:
  where(const char* name) : name_(name) {}  // NOLINT(google-explicit-constructor): a plain name
  explicit where(std::string_view name) : name_(name) {}
  where(std::string_view name, std::size_t index) : name_(name), index_(index) {}

  // The same place's field `field` (and `tail` after it).
  where at(std::string_view field, std::string_view tail = {}) const {
    where inner = *this;
    inner.field_ = field;
    inner.tail_ = tail;
    return inner;
  }

  std::string text() const {
    std::string out(name_);
    if (index_ != std::string_view::npos) out += "[" + std::to_string(index_) + "]";
    out += field_;
    out += tail_;
    return out;
  }

 private:
  std::string_view name_;
  std::size_t index_ = std::string_view::npos;
  std::string_view field_;
  std::string_view tail_;
};

[[noreturn]] void fail(const where& path, std::string_view what) {
  throw bad_page{path.text() + ": " + std::string(what)};
}

// Thrown once a row was read whole when its money cannot be normalised; its array turns it into a
// rejected_row and goes on with the next row.
struct bad_money {
  rejection_reason reason;
  std::optional<std::string> currency;
  std::string detail;
};

// Cuts `text` to at most `bytes_max` bytes without splitting a UTF-8 character.
std::string cut_utf8(std::string_view text, std::size_t bytes_max) {
  if (text.size() <= bytes_max) return std::string(text);
  std::size_t cut = bytes_max;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut));
}

// PostgreSQL's text cannot hold U+0000 (JSON's \u0000): such a value would fail the whole apply
// at the database, so it fails the page here, by name.
void refuse_nul(std::string_view text, const where& path) {
  if (text.find('\0') != std::string_view::npos) fail(path, "contains U+0000, which text columns cannot hold");
}

std::string required_string(value v, const where& path, std::size_t bytes_max) {
  if (v.type() != json_type::string) fail(path, "expected a string");
  const std::string_view text = v.get_string();
  if (text.empty()) fail(path, "empty");
  refuse_nul(text, path);
  if (text.size() > bytes_max) fail(path, "longer than " + std::to_string(bytes_max) + " bytes");
  return std::string(text);
}

std::optional<std::string> optional_text(value v, const where& path, std::size_t bytes_max) {
  if (v.is_null()) return std::nullopt;
  if (v.type() != json_type::string) fail(path, "expected a string or null");
  const std::string_view text = v.get_string();
  if (text.empty()) return std::nullopt;
  refuse_nul(text, path);
  return cut_utf8(text, bytes_max);
}

std::optional<std::string> optional_id(value v, const where& path) {
  if (v.is_null()) return std::nullopt;
  return required_string(v, path, plaid_id_bytes_max);
}

bool required_bool(value v, const where& path) {
  if (v.type() != json_type::boolean) fail(path, "expected true or false");
  return v.get_bool();
}

std::string_view number_text(value v, const where& path) {
  if (v.type() != json_type::number) fail(path, "expected a number");
  return v.raw_json_token();
}

std::optional<std::string> optional_date(value v, const where& path) {
  if (v.is_null()) return std::nullopt;
  if (v.type() != json_type::string) fail(path, "expected a date string or null");
  const std::string_view text = v.get_string();
  if (!is_calendar_date(text)) fail(path, "'" + std::string(text.substr(0, 32)) + "' is not a YYYY-MM-DD date");
  return std::string(text);
}

// Resolves the currency code pair to one known currency.
const core::currency& resolve_currency(const std::optional<std::string>& iso, const std::optional<std::string>& unofficial,
                                       const core::currency_table& currencies, const where& path) {
  const std::optional<std::string>& code = iso ? iso : unofficial;
  if (!code) {
    throw bad_money{rejection_reason::no_currency, std::nullopt,
                    path.text() + ": neither iso_currency_code nor unofficial_currency_code is set"};
  }
  const core::currency* found = currencies.find(*code);
  if (found == nullptr) {
    throw bad_money{rejection_reason::unknown_currency, *code,
                    path.text() + ": unknown currency '" + code->substr(0, 16) + "' (declare it in bankworker.currencies)"};
  }
  return *found;
}

std::int64_t to_minor(std::string_view text, const core::currency& currency, const where& path) {
  const amount_result amount = parse_minor_units(text, currency.exponent);
  if (!amount.ok) {
    throw bad_money{rejection_reason::amount_unrepresentable, currency.code,
                    path.text() + ": " + amount.error + " (" + currency.code + ")"};
  }
  return amount.minor;
}

// Longer than 70 lines on purpose: one pass over a Transaction's fields in simdjson's document
// order (STYLE.md §10: each field read once), one line per field; split, the object iterator would
// have to travel between the pieces.
transaction parse_transaction(object object_value, const core::currency_table& currencies, const where& path) {
  transaction t;
  std::string amount;  // kept as text until the currency is known
  std::optional<std::string> iso;
  std::optional<std::string> unofficial;
  bool seen_id = false, seen_account = false, seen_amount = false, seen_date = false, seen_pending = false;
  for (auto field : object_value) {
    const std::string_view key = field.unescaped_key();
    value v = field.value();
    if (key == "transaction_id") {
      t.transaction_id = required_string(v, path.at(".transaction_id"), plaid_id_bytes_max);
      seen_id = true;
    } else if (key == "account_id") {
      t.account_id = required_string(v, path.at(".account_id"), plaid_id_bytes_max);
      seen_account = true;
    } else if (key == "amount") {
      amount = std::string(number_text(v, path.at(".amount")));
      seen_amount = true;
    } else if (key == "iso_currency_code") {
      iso = optional_text(v, path.at(".iso_currency_code"), short_text_bytes_max);
    } else if (key == "unofficial_currency_code") {
      unofficial = optional_text(v, path.at(".unofficial_currency_code"), short_text_bytes_max);
    } else if (key == "date") {
      auto date = optional_date(v, path.at(".date"));
      if (!date) fail(path.at(".date"), "missing");
      t.date = std::move(*date);
      seen_date = true;
    } else if (key == "authorized_date") {
      t.authorized_date = optional_date(v, path.at(".authorized_date"));
    } else if (key == "name") {
      t.name = optional_text(v, path.at(".name"), transaction_name_bytes_max).value_or("");
    } else if (key == "merchant_name") {
      t.merchant_name = optional_text(v, path.at(".merchant_name"), merchant_name_bytes_max);
    } else if (key == "payment_channel") {
      t.payment_channel = optional_text(v, path.at(".payment_channel"), short_text_bytes_max);
    } else if (key == "pending") {
      t.pending = required_bool(v, path.at(".pending"));
      seen_pending = true;
    } else if (key == "pending_transaction_id") {
      t.pending_transaction_id = optional_id(v, path.at(".pending_transaction_id"));
    } else if (key == "personal_finance_category") {
      if (v.is_null()) continue;
      if (v.type() != json_type::object) fail(path.at(".personal_finance_category"), "expected an object or null");
      for (auto category : v.get_object()) {
        const std::string_view category_key = category.unescaped_key();
        if (category_key == "primary") {
          t.category_primary = optional_text(category.value(), path.at(".personal_finance_category.primary"),
                                             short_text_bytes_max);
        } else if (category_key == "detailed") {
          t.category_detailed = optional_text(category.value(), path.at(".personal_finance_category.detailed"),
                                              short_text_bytes_max);
        }
      }
    }
    // Every other field (location, counterparties, payment_meta, …) is not stored.
  }
  if (!seen_id) fail(path, "transaction_id missing");
  if (!seen_account) fail(path, "account_id missing");
  if (!seen_amount) fail(path, "amount missing");
  if (!seen_date) fail(path, "date missing");
  if (!seen_pending) fail(path, "pending missing");
  const core::currency& currency = resolve_currency(iso, unofficial, currencies, path);
  t.currency = currency.code;
  t.official_currency = iso.has_value();
  const std::int64_t outflow = to_minor(amount, currency, path.at(".amount"));
  // Plaid: positive means money left the account. Ours: inflow positive. INT64_MIN cannot occur:
  // parse_minor_units bounds magnitudes by INT64_MAX.
  t.amount_minor = -outflow;
  if (t.name.empty()) t.name = t.merchant_name.value_or("(no description)");
  return t;
}

removed_transaction parse_removed(value v, const where& path) {
  removed_transaction r;
  bool seen_id = false;
  if (v.type() == json_type::string) {  // older API versions sent bare ids
    r.transaction_id = required_string(v, path, plaid_id_bytes_max);
    return r;
  }
  if (v.type() != json_type::object) fail(path, "expected an object");
  for (auto field : v.get_object()) {
    const std::string_view key = field.unescaped_key();
    if (key == "transaction_id") {
      r.transaction_id = required_string(field.value(), path.at(".transaction_id"), plaid_id_bytes_max);
      seen_id = true;
    } else if (key == "account_id") {
      r.account_id = optional_id(field.value(), path.at(".account_id"));
    }
  }
  if (!seen_id) fail(path, "transaction_id missing");
  return r;
}

account parse_account(object object_value, const core::currency_table& currencies, const where& path) {
  account a;
  std::optional<std::string> current, available, limit, iso, unofficial;
  bool seen_id = false, seen_type = false;
  for (auto field : object_value) {
    const std::string_view key = field.unescaped_key();
    value v = field.value();
    if (key == "account_id") {
      a.account_id = required_string(v, path.at(".account_id"), plaid_id_bytes_max);
      seen_id = true;
    } else if (key == "name") {
      a.name = optional_text(v, path.at(".name"), merchant_name_bytes_max).value_or("");
    } else if (key == "official_name") {
      a.official_name = optional_text(v, path.at(".official_name"), merchant_name_bytes_max);
    } else if (key == "mask") {
      a.mask = optional_text(v, path.at(".mask"), 16);
    } else if (key == "type") {
      a.type = required_string(v, path.at(".type"), 64);
      seen_type = true;
    } else if (key == "subtype") {
      a.subtype = optional_text(v, path.at(".subtype"), 64);
    } else if (key == "balances") {
      if (v.type() != json_type::object) fail(path.at(".balances"), "expected an object");
      for (auto balance : v.get_object()) {
        const std::string_view balance_key = balance.unescaped_key();
        value b = balance.value();
        const where balance_path = path.at(".balances.", balance_key);
        const auto number = [&]() -> std::optional<std::string> {
          if (b.is_null()) return std::nullopt;
          return std::string(number_text(b, balance_path));
        };
        if (balance_key == "current") current = number();
        else if (balance_key == "available") available = number();
        else if (balance_key == "limit") limit = number();
        else if (balance_key == "iso_currency_code") iso = optional_text(b, balance_path, short_text_bytes_max);
        else if (balance_key == "unofficial_currency_code") unofficial = optional_text(b, balance_path, short_text_bytes_max);
      }
    }
  }
  if (!seen_id) fail(path, "account_id missing");
  if (!seen_type) fail(path, "type missing");
  if (a.name.empty()) a.name = a.official_name.value_or("(unnamed account)");
  const core::currency& currency = resolve_currency(iso, unofficial, currencies, path.at(".balances"));
  a.currency = currency.code;
  if (current) a.current_minor = to_minor(*current, currency, path.at(".balances.current"));
  if (available) a.available_minor = to_minor(*available, currency, path.at(".balances.available"));
  if (limit) a.limit_minor = to_minor(*limit, currency, path.at(".balances.limit"));
  return a;
}

// The id a rejected row is keyed by, read again from its raw text (the row was read whole once;
// only rows that are rejected pay for this).
std::string id_in(object& row, std::string_view key) {
  for (auto field : row) {
    if (field.unescaped_key() == key) return std::string(field.value().get_string().value());
  }
  return {};
}

// Reads an array of objects with `parse`, setting aside each row whose money is rejected with the
// row's raw JSON. Every other failure still fails the page.
template <class Item, class Parse>
void parse_rows(value v, std::string_view name, rejected_row::row_kind kind, std::vector<Item>& out,
                std::vector<rejected_row>& rejected, money_rows policy, Parse parse) {
  if (v.type() != json_type::array) fail(where(name), "expected an array");
  const std::size_t items_max = kind == rejected_row::row_kind::account ? page_accounts_max : page_items_max;
  std::size_t index = 0;
  for (auto element : v.get_array()) {
    if (index >= items_max) fail(where(name), "more than " + std::to_string(items_max) + " items");
    const where path(name, index);
    ++index;
    value row_value = element.value();
    if (row_value.type() != json_type::object) fail(path, "expected an object");
    object row = row_value.get_object();
    try {
      out.push_back(parse(row, path));
    } catch (const bad_money& money) {
      if (policy == money_rows::fail_page) throw bad_page{money.detail};
      rejected_row r;
      r.kind = kind;
      r.list = std::string(name);
      r.reason = money.reason;
      r.currency = money.currency;
      r.detail = money.detail;
      // The row was read to its end: rewind it for its raw bytes and its keys.
      row.reset();
      std::string_view raw = row.raw_json();
      while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\r' || raw.back() == '\t')) {
        raw.remove_suffix(1);
      }
      if (raw.size() > rejected_raw_bytes_max) fail(path, "rejected row longer than rejected_raw_bytes_max");
      r.raw_json = std::string(raw);
      row.reset();
      r.plaid_id = id_in(row, kind == rejected_row::row_kind::account ? "account_id" : "transaction_id");
      if (kind == rejected_row::row_kind::transaction) {
        row.reset();
        r.account_id = id_in(row, "account_id");
      }
      rejected.push_back(std::move(r));
    }
  }
}

template <class Item, class Parse>
void parse_array(value v, std::string_view name, std::size_t items_max, std::vector<Item>& out, Parse parse) {
  if (v.type() != json_type::array) fail(where(name), "expected an array");
  std::size_t index = 0;
  for (auto element : v.get_array()) {
    if (index >= items_max) fail(where(name), "more than " + std::to_string(items_max) + " items");
    out.push_back(parse(element.value(), where(name, index)));
    ++index;
  }
}

}  // namespace

std::string_view to_string(rejection_reason reason) noexcept {
  switch (reason) {
    case rejection_reason::unknown_currency:
      return "unknown_currency";
    case rejection_reason::no_currency:
      return "no_currency";
    case rejection_reason::amount_unrepresentable:
      return "amount_unrepresentable";
  }
  return "unknown_currency";
}

bool is_calendar_date(std::string_view text) noexcept {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
  int parts[3] = {0, 0, 0};
  const std::size_t starts[3] = {0, 5, 8};
  const std::size_t lengths[3] = {4, 2, 2};
  for (int p = 0; p < 3; ++p) {
    for (std::size_t i = 0; i < lengths[p]; ++i) {
      const char c = text[starts[p] + i];
      if (c < '0' || c > '9') return false;
      parts[p] = parts[p] * 10 + (c - '0');
    }
  }
  const int year = parts[0], month = parts[1], day = parts[2];
  if (year < 1900 || month < 1 || month > 12 || day < 1) return false;
  static constexpr int days_in_month[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int days = days_in_month[month - 1] + (month == 2 && leap ? 1 : 0);
  return day <= days;
}

namespace {

// The one boundary where a bad body becomes an error value: `read` fills `result.page` from the
// document and throws bad_page (or simdjson's error) on anything wrong.
template <class Result, class Read>
Result parse_body(simdjson::ondemand::parser& parser, std::string_view body, std::size_t readable_bytes, Read read) {
  Result result;
  if (body.size() > page_body_bytes_max) {
    result.error = "body larger than page_body_bytes_max (" + std::to_string(page_body_bytes_max) + " bytes)";
    return result;
  }
  try {
    // simdjson reads up to SIMDJSON_PADDING bytes past the end (their content does not matter).
    std::optional<simdjson::padded_string> copy;
    if (readable_bytes < body.size() + simdjson::SIMDJSON_PADDING) copy.emplace(body);
    simdjson::ondemand::document document =
        copy ? parser.iterate(*copy) : parser.iterate(body.data(), body.size(), readable_bytes);
    read(document, result.page);
    result.ok = true;
  } catch (const bad_page& error) {
    result.error = error.reason;
    result.page = {};
  } catch (const simdjson::simdjson_error& error) {
    result.error = std::string("malformed JSON: ") + simdjson::error_message(error.error());
    result.page = {};
  }
  return result;
}

void parse_accounts(value v, const core::currency_table& currencies, std::vector<account>& out,
                    std::vector<rejected_row>& rejected, money_rows policy) {
  parse_rows(v, "accounts", rejected_row::row_kind::account, out, rejected, policy,
             [&](object row, const where& path) { return parse_account(row, currencies, path); });
}

}  // namespace

page_result parse_sync_page(simdjson::ondemand::parser& parser, std::string_view body,
                            const core::currency_table& currencies, std::size_t readable_bytes,
                            money_rows rejected_rows) {
  return parse_body<page_result>(parser, body, readable_bytes,
                                 [&](simdjson::ondemand::document& document, sync_page& page) {
    bool seen_cursor = false, seen_has_more = false;
    for (auto field : document.get_object()) {
      const std::string_view key = field.unescaped_key();
      value v = field.value();
      if (key == "added" || key == "modified") {
        auto& list = key == "added" ? page.added : page.modified;
        parse_rows(v, key == "added" ? "added" : "modified", rejected_row::row_kind::transaction, list, page.rejected,
                   rejected_rows, [&](object row, const where& path) { return parse_transaction(row, currencies, path); });
      } else if (key == "removed") {
        parse_array(v, "removed", page_items_max, page.removed,
                    [&](value element, const where& path) { return parse_removed(element, path); });
      } else if (key == "accounts") {
        parse_accounts(v, currencies, page.accounts, page.rejected, rejected_rows);
      } else if (key == "next_cursor") {
        if (v.type() != json_type::string) fail("next_cursor", "expected a string");
        const std::string_view cursor = v.get_string();
        if (cursor.size() > cursor_bytes_max) fail("next_cursor", "longer than cursor_bytes_max");
        refuse_nul(cursor, "next_cursor");
        page.next_cursor = std::string(cursor);
        seen_cursor = true;
      } else if (key == "has_more") {
        page.has_more = required_bool(v, "has_more");
        seen_has_more = true;
      }
    }
    if (!seen_cursor) fail("next_cursor", "missing");
    if (!seen_has_more) fail("has_more", "missing");
    if (page.has_more && page.next_cursor.empty()) fail("next_cursor", "empty while has_more is true");
    if (page.added.size() + page.modified.size() + page.removed.size() + page.rejected.size() > page_items_max) {
      fail("body", "more than page_items_max updates in one page");
    }
  });
}

page_result parse_quarantined_row(simdjson::ondemand::parser& parser, rejected_row::row_kind kind, std::string_view raw,
                                  const core::currency_table& currencies) {
  if (raw.size() > rejected_raw_bytes_max) {
    page_result result;
    result.error = "quarantined row longer than rejected_raw_bytes_max";
    return result;
  }
  std::string body = kind == rejected_row::row_kind::account ? R"({"accounts":[)" : R"({"added":[)";
  body += raw;
  body += R"(],"next_cursor":"","has_more":false})";
  return parse_sync_page(parser, body, currencies, body.capacity(), money_rows::set_aside);
}

accounts_page_result parse_accounts_page(simdjson::ondemand::parser& parser, std::string_view body,
                                         const core::currency_table& currencies, money_rows rejected_rows) {
  return parse_body<accounts_page_result>(parser, body, 0,
                                          [&](simdjson::ondemand::document& document, accounts_page& page) {
    bool seen_accounts = false, seen_item = false;
    for (auto field : document.get_object()) {
      const std::string_view key = field.unescaped_key();
      value v = field.value();
      if (key == "accounts") {
        parse_accounts(v, currencies, page.accounts, page.rejected, rejected_rows);
        seen_accounts = true;
      } else if (key == "item") {
        if (v.type() != json_type::object) fail("item", "expected an object");
        for (auto item_field : v.get_object()) {
          const std::string_view item_key = item_field.unescaped_key();
          if (item_key == "item_id") {
            page.item_id = required_string(item_field.value(), "item.item_id", plaid_id_bytes_max);
            seen_item = true;
          } else if (item_key == "institution_id") {
            page.institution_id = optional_id(item_field.value(), "item.institution_id");
          }
        }
      }
    }
    if (!seen_accounts) fail("accounts", "missing");
    if (!seen_item) fail("item.item_id", "missing");
  });
}

}  // namespace bankworker::plaid
