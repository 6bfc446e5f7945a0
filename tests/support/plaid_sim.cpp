#include "tests/support/plaid_sim.hpp"

#include <catch2/catch.hpp>

#include <simdjson.h>

#include "tests/support/http_client.hpp"

namespace bankworker::test {

namespace {

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
  return parse_truth(post("/sim/transactions/truth", "{\"access_token\":\"" + access_token + "\"}"));
}

std::size_t plaid_simulator::calls(const std::string& endpoint, const std::string& item_id) const {
  simdjson::dom::parser parser;
  const std::string body = post("/sim/calls", "{\"endpoint\":\"" + endpoint + "\",\"item_id\":\"" + item_id + "\"}");
  return parser.parse(body)["calls"].get_array().size();
}

}  // namespace bankworker::test
