#pragma once
// One page of /transactions/sync, parsed and normalised (pure: no I/O, fuzzable).
//
// What normalising means here: amounts become integer minor units of the transaction's currency
// with the sign flipped so inflow is positive (Plaid reports outflow as positive); the currency is
// iso_currency_code or, failing that, unofficial_currency_code, and must be known to the currency
// table; dates are checked calendar dates; descriptive text is cut to the stored length at a
// UTF-8 boundary; identifiers that do not fit are refused. Unknown fields and unknown enum values
// (a new payment_channel, say) are tolerated: Plaid adds them without notice.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "core/currency.hpp"

namespace bankworker::plaid {

// A page holds at most `count` (500) updates; this bound is generous and still finite.
inline constexpr std::size_t page_items_max = 2'000;
inline constexpr std::size_t page_accounts_max = 100;
inline constexpr std::size_t page_body_bytes_max = 16 << 20;
inline constexpr std::size_t plaid_id_bytes_max = 256;
inline constexpr std::size_t cursor_bytes_max = 4'096;
inline constexpr std::size_t transaction_name_bytes_max = 1'024;
inline constexpr std::size_t merchant_name_bytes_max = 512;
inline constexpr std::size_t short_text_bytes_max = 128;

struct transaction {
  std::string transaction_id;
  std::string account_id;
  std::int64_t amount_minor = 0;  // inflow positive
  std::string currency;           // ISO code, or the unofficial code when official is null
  bool official_currency = true;
  std::string date;                           // YYYY-MM-DD
  std::optional<std::string> authorized_date;  // YYYY-MM-DD
  std::string name;
  std::optional<std::string> merchant_name;
  std::optional<std::string> payment_channel;
  std::optional<std::string> category_primary;
  std::optional<std::string> category_detailed;
  bool pending = false;
  std::optional<std::string> pending_transaction_id;
};

struct removed_transaction {
  std::string transaction_id;
  std::optional<std::string> account_id;
};

struct account {
  std::string account_id;
  std::string name;
  std::optional<std::string> official_name;
  std::optional<std::string> mask;
  std::string type;
  std::optional<std::string> subtype;
  std::string currency;
  std::optional<std::int64_t> current_minor;  // as Plaid reports them (not sign-flipped)
  std::optional<std::int64_t> available_minor;
  std::optional<std::int64_t> limit_minor;
};

struct sync_page {
  std::vector<transaction> added;
  std::vector<transaction> modified;
  std::vector<removed_transaction> removed;
  std::vector<account> accounts;
  std::string next_cursor;
  bool has_more = false;
};

struct page_result {
  bool ok = false;
  sync_page page;
  std::string error;  // when !ok: what is wrong and where (field path), never the amounts' owners
};

// Parses a 200 response body. `parser` is reused by the caller (one per thread). `readable_bytes`
// is how many bytes from body.data() may be read: with SIMDJSON_PADDING or more past the body
// (a std::string's capacity, say), it is parsed in place; otherwise from a padded copy.
page_result parse_sync_page(simdjson::ondemand::parser& parser, std::string_view body,
                            const core::currency_table& currencies, std::size_t readable_bytes = 0);

// /accounts/get: the accounts, read exactly as a sync page's, and the item they belong to.
struct accounts_page {
  std::vector<account> accounts;
  std::string item_id;
  std::optional<std::string> institution_id;
};

struct accounts_page_result {
  bool ok = false;
  accounts_page page;
  std::string error;  // when !ok: what is wrong and where
};

// Parses a 200 response body of /accounts/get. `parser` is reused by the caller.
accounts_page_result parse_accounts_page(simdjson::ondemand::parser& parser, std::string_view body,
                                         const core::currency_table& currencies);

// Whether `text` is a real calendar date written YYYY-MM-DD.
bool is_calendar_date(std::string_view text) noexcept;

}  // namespace bankworker::plaid
