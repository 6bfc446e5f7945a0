#pragma once
// One page of /transactions/sync, parsed and normalised (pure: no I/O, fuzzable).
//
// What normalising means here: amounts become integer minor units of the transaction's currency
// with the sign flipped so inflow is positive (Plaid reports outflow as positive); the currency is
// iso_currency_code or, failing that, unofficial_currency_code, and must be known to the currency
// table; dates are checked calendar dates; descriptive text is cut to the stored length at a
// UTF-8 boundary; identifiers that do not fit are refused. Unknown fields and unknown enum values
// (a new payment_channel, say) are tolerated: Plaid adds them without notice. A row whose money
// cannot be normalised (a currency the table does not know, an amount finer than its currency)
// does not fail the page: it is returned apart, raw, in `rejected` (issue #16: one row that
// cannot be stored never blocks the others).

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

// Why a row's money cannot be stored. Each is about that row alone: the page around it is fine.
enum class rejection_reason {
  unknown_currency,        // its currency code is not in the currency table: quarantine it; it applies once
                           // the currency is declared (bankworker currencies add)
  no_currency,             // neither iso_currency_code nor unofficial_currency_code is set: quarantine it;
                           // Plaid says this does not happen, so a person looks
  amount_unrepresentable,  // an amount finer than its currency's exponent, or beyond 64-bit minor units:
                           // quarantine it; declaring the currency again does not help, a person looks
};

std::string_view to_string(rejection_reason reason) noexcept;  // the names above: unknown_currency, …

inline constexpr std::size_t rejected_raw_bytes_max = 65'536;  // plaid_quarantine.raw's check (migration 0030)

// A transaction or an account whose money could not be normalised, kept exactly as Plaid sent it
// so the I/O side can quarantine it (bankworker.plaid_quarantine) and apply the rest of the page.
// Rows that are malformed otherwise (no transaction_id, a date that is no date, …) still fail the
// whole page: they cannot even be keyed.
struct rejected_row {
  enum class row_kind { transaction, account };
  row_kind kind = row_kind::transaction;
  std::string list;        // where it was: added, modified or accounts
  std::string plaid_id;    // transaction_id or account_id
  std::string account_id;  // the transaction's account (empty for an account)
  rejection_reason reason = rejection_reason::unknown_currency;
  std::optional<std::string> currency;  // the code as sent, when one was (at most short_text_bytes_max)
  std::string detail;                   // what is wrong and where, as page_result::error would say it
  std::string raw_json;                 // the row's JSON object, byte for byte as received
};

struct sync_page {
  std::vector<transaction> added;
  std::vector<transaction> modified;
  std::vector<removed_transaction> removed;
  std::vector<account> accounts;
  // With money_rows::set_aside (below): rows of added, modified and accounts left out of those
  // lists because of their money; always empty with fail_page. The page is still ok: apply the rest and move the cursor (a row sent again later replaces its
  // quarantined copy). A transaction whose account is quarantined is kept when its own currency is
  // known: transactions do not reference accounts in the database.
  std::vector<rejected_row> rejected;
  std::string next_cursor;
  bool has_more = false;
};

struct page_result {
  bool ok = false;
  sync_page page;
  std::string error;  // when !ok: what is wrong and where (field path), never the amounts' owners
};

// What the parser does with a row whose money cannot be normalised. fail_page is the behaviour
// before issue #16 and stays the default until the I/O side stores `rejected` rows in
// bankworker.plaid_quarantine: a caller that ignored `rejected` would move the cursor past them
// and lose them. set_aside is for a caller that quarantines every rejected row in the same
// transaction that applies the page.
enum class money_rows { fail_page, set_aside };

// Parses a 200 response body. `parser` is reused by the caller (one per thread). `readable_bytes`
// is how many bytes from body.data() may be read: with SIMDJSON_PADDING or more past the body
// (a std::string's capacity, say), it is parsed in place; otherwise from a padded copy.
page_result parse_sync_page(simdjson::ondemand::parser& parser, std::string_view body,
                            const core::currency_table& currencies, std::size_t readable_bytes = 0,
                            money_rows rejected_rows = money_rows::fail_page);

// A quarantined row read again (once its currency may have been declared), as a one-row page:
// ok with the row in `added` or `accounts`; ok with it in `rejected` when its money still cannot
// be stored (the reason may have changed: an amount finer than the newly declared exponent); !ok
// when the row is malformed otherwise (it stays quarantined and a person looks).
page_result parse_quarantined_row(simdjson::ondemand::parser& parser, rejected_row::row_kind kind, std::string_view raw,
                                  const core::currency_table& currencies);

// /accounts/get: the accounts, read exactly as a sync page's, and the item they belong to.
struct accounts_page {
  std::vector<account> accounts;
  std::vector<rejected_row> rejected;  // accounts whose balances' money could not be normalised
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
                                         const core::currency_table& currencies,
                                         money_rows rejected_rows = money_rows::fail_page);

// Whether `text` is a real calendar date written YYYY-MM-DD.
bool is_calendar_date(std::string_view text) noexcept;

}  // namespace bankworker::plaid
