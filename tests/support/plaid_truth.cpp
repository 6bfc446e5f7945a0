#include "tests/support/plaid_truth.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <stdexcept>

#include <simdjson.h>

namespace bankworker::test {

namespace {

int exponent_of(const std::string& currency) {
  // The simulator's five, and QQQ: a code no table declares, which tests give a transaction
  // (/sim/transactions/add "unofficial_currency_code", reported with 2 decimals) to see it quarantined.
  static const std::map<std::string, int> exponents{{"USD", 2}, {"EUR", 2}, {"JPY", 0}, {"BHD", 3}, {"BTC", 8},
                                                    {"QQQ", 2}};
  const auto found = exponents.find(currency);
  if (found == exponents.end()) throw std::runtime_error("the simulator's truth names an unknown currency " + currency);
  return found->second;
}

std::int64_t inflow_minor_units(std::string_view text, int exponent) {
  bool negative = false;
  if (!text.empty() && text.front() == '-') {
    negative = true;
    text.remove_prefix(1);
  }
  const auto dot = text.find('.');
  std::string digits(text.substr(0, dot));
  std::string fraction = dot == std::string_view::npos ? "" : std::string(text.substr(dot + 1));
  if (fraction.size() > static_cast<std::size_t>(exponent)) {
    throw std::runtime_error("the simulator's amount " + std::string(text) + " has more decimals than its currency");
  }
  fraction.append(static_cast<std::size_t>(exponent) - fraction.size(), '0');
  const std::int64_t magnitude = std::stoll(digits + fraction);
  return negative ? magnitude : -magnitude;
}

}  // namespace

std::vector<expected_row> parse_truth(std::string_view body_text) {
  simdjson::ondemand::parser parser;
  const simdjson::padded_string body(body_text);
  std::vector<expected_row> rows;
  auto document = parser.iterate(body);
  for (auto value : document["transactions"].get_array()) {
    simdjson::ondemand::object t = value.get_object();
    expected_row row;
    row.transaction_id = std::string(std::string_view(t["transaction_id"].get_string()));
    const std::string amount(t["amount"].raw_json_token().value());
    auto iso = t["iso_currency_code"];
    if (iso.is_null()) {
      row.currency = std::string(std::string_view(t["unofficial_currency_code"].get_string()));
    } else {
      row.currency = std::string(std::string_view(iso.get_string()));
    }
    row.pending = t["pending"].get_bool();
    auto pending_id = t["pending_transaction_id"];
    if (!pending_id.is_null()) row.pending_transaction_id = std::string(std::string_view(pending_id.get_string()));
    std::string trimmed = amount;
    trimmed.erase(std::remove_if(trimmed.begin(), trimmed.end(), [](unsigned char c) { return std::isspace(c) != 0; }), trimmed.end());
    row.amount_minor = inflow_minor_units(trimmed, exponent_of(row.currency));
    rows.push_back(std::move(row));
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

std::vector<expected_row> stored_rows(pqxx::connection& admin, const std::string& connection_id) {
  pqxx::work tx(admin);
  std::vector<expected_row> rows;
  for (const auto& r : tx.exec_params("SELECT transaction_id, amount_minor, currency, pending, pending_transaction_id"
                                      " FROM bankworker.transactions WHERE connection_id = $1::uuid AND removed_at IS NULL"
                                      " ORDER BY transaction_id",
                                      connection_id)) {
    expected_row row{r[0].as<std::string>(), r[1].as<std::int64_t>(), r[2].as<std::string>(), r[3].as<bool>(),
                     std::nullopt};
    if (!r[4].is_null()) row.pending_transaction_id = r[4].as<std::string>();
    rows.push_back(std::move(row));
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace bankworker::test
