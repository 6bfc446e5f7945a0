#include "tests/support/plaid_sim.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <map>

#include <simdjson.h>

#include "tests/support/http_client.hpp"

namespace bankworker::test {

namespace {

int exponent_of(const std::string& currency) {
  static const std::map<std::string, int> exponents{{"USD", 2}, {"EUR", 2}, {"JPY", 0}, {"BHD", 3}, {"BTC", 8}};
  const auto found = exponents.find(currency);
  REQUIRE(found != exponents.end());
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
  REQUIRE(fraction.size() <= static_cast<std::size_t>(exponent));
  fraction.append(static_cast<std::size_t>(exponent) - fraction.size(), '0');
  const std::int64_t magnitude = std::stoll(digits + fraction);
  return negative ? magnitude : -magnitude;
}

std::string sim_post(const std::string& url, const std::string& body) {
  const auto result = http_post(url, body, {"Content-Type: application/json"});
  INFO(url << " answered " << result.status << ": " << result.body);
  REQUIRE(result.status == 200);
  return result.body;
}

std::vector<std::string> arguments(const std::vector<std::string>& extra) {
  std::vector<std::string> args{"--port", "0", "--transactions", "40"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

}  // namespace

plaid_simulator::plaid_simulator(const std::vector<std::string>& extra)
  : process(PLAID_SIM_BINARY, arguments(extra), {}), url(base_url_from(process)) {}

std::string plaid_simulator::post(const std::string& path, const std::string& body) const {
return sim_post(url + path, body);
}

std::string plaid_simulator::public_token() const {
  simdjson::dom::parser parser;
  const std::string body = post("/sandbox/public_token/create",
                                std::string("{\"client_id\":\"") + sim_client_id + "\",\"secret\":\"" + sim_secret +
                                    "\",\"institution_id\":\"ins_109508\",\"initial_products\":[\"transactions\"]}");
  return std::string(parser.parse(body)["public_token"].get_string().value());
}

std::string plaid_simulator::access_token_of(const std::string& item_id) const {
  simdjson::dom::parser parser;
  const std::string body = post("/sim/items", "{}");
  for (simdjson::dom::element item : parser.parse(body)["items"].get_array()) {
    if (item["item_id"].get_string().value() == item_id) return std::string(item["access_token"].get_string().value());
  }
  FAIL("no item " << item_id << " in the simulator");
  return {};
}

std::vector<expected_row> plaid_simulator::truth(const std::string& access_token) const {
  simdjson::ondemand::parser parser;
  const simdjson::padded_string body(post("/sim/transactions/truth", "{\"access_token\":\"" + access_token + "\"}"));
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

std::size_t plaid_simulator::calls(const std::string& endpoint, const std::string& item_id) const {
  simdjson::dom::parser parser;
  const std::string body = post("/sim/calls", "{\"endpoint\":\"" + endpoint + "\",\"item_id\":\"" + item_id + "\"}");
  return parser.parse(body)["calls"].get_array().size();
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
