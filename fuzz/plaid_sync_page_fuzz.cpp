// The /transactions/sync page parser and normaliser on arbitrary bytes. Beyond "no crash": a page
// is either refused with a reason or every row in it is complete and within the stored bounds, and
// parsing the bytes in place (garbage past their end) gives the same verdict as from a copy. With
// rows whose money fails set aside (money_rows::set_aside), a page the default accepts is accepted
// the same, and a page is accepted there whenever it is by default; each set-aside row has its id
// and its raw bytes, which are a piece of the body.
#include <cstdlib>
#include <string>
#include <string_view>

#include "connectors/plaid/sync_page.hpp"

using namespace bankworker;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
  static simdjson::ondemand::parser parser;
  static const core::currency_table currencies(
      {{"USD", 2, true}, {"EUR", 2, true}, {"JPY", 0, true}, {"BHD", 3, true}, {"BTC", 8, false}});

  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const plaid::page_result result = plaid::parse_sync_page(parser, body, currencies);
  const plaid::page_result lenient = plaid::parse_sync_page(parser, body, currencies, 0, plaid::money_rows::set_aside);
  require(result.page.rejected.empty());
  if (result.ok) {
    require(lenient.ok);
    require(lenient.page.rejected.empty());
    require(lenient.page.added.size() == result.page.added.size());
  }
  for (const plaid::rejected_row& row : lenient.page.rejected) {
    require(!row.plaid_id.empty());
    require(!row.raw_json.empty() && row.raw_json.size() <= plaid::rejected_raw_bytes_max);
    require(body.find(row.raw_json) != std::string_view::npos);
  }

  std::string in_place(body);
  in_place.append(simdjson::SIMDJSON_PADDING, '{');
  in_place.resize(body.size());
  const plaid::page_result direct = plaid::parse_sync_page(parser, in_place, currencies, in_place.capacity());
  require(direct.ok == result.ok);
  require(direct.error == result.error);
  require(direct.page.added.size() == result.page.added.size());
  require(direct.page.next_cursor == result.page.next_cursor);
  if (!result.ok) {
    require(!result.error.empty());
    require(result.page.added.empty() && result.page.modified.empty() && result.page.removed.empty());
    return 0;
  }
  for (const auto* list : {&result.page.added, &result.page.modified}) {
    for (const plaid::transaction& t : *list) {
      require(!t.transaction_id.empty() && t.transaction_id.size() <= plaid::plaid_id_bytes_max);
      require(!t.account_id.empty());
      require(currencies.find(t.currency) != nullptr);
      require(plaid::is_calendar_date(t.date));
      require(t.name.size() <= plaid::transaction_name_bytes_max);
    }
  }
  require(!result.page.has_more || !result.page.next_cursor.empty());
  return 0;
}
