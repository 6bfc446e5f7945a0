// Reading and editing the providers' published shapes (fixture.hpp).
#include "tests/support/fixture.hpp"

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

namespace bankworker::test {

std::string read_fixture(std::string_view name) {
  const std::string path = std::string(BANKWORKER_FIXTURES_DIR) + "/" + std::string(name);
  std::ifstream file(path);
  INFO(path);
  REQUIRE(file);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

std::string with_field(std::string json, std::string_view field, std::string_view old_value, std::string_view value) {
  const std::string anchor = "\"" + std::string(field) + "\": " + std::string(old_value);
  const std::size_t at = json.find(anchor);
  INFO("fixture has no " << anchor);
  REQUIRE(at != std::string::npos);
  json.replace(at, anchor.size(), "\"" + std::string(field) + "\": " + std::string(value));
  return json;
}

std::string stripe_event(std::string_view type, std::string_view object_json) {
  std::string event = with_field(read_fixture("stripe/event.json"), "type", "\"plan.created\"",
                                 "\"" + std::string(type) + "\"");
  // data.object is the first object after "data": its braces are matched (the fixture's strings
  // hold no braces) and the whole value replaced.
  const std::string anchor = "\"object\": {";
  const std::size_t data = event.find("\"data\": {");
  REQUIRE(data != std::string::npos);
  const std::size_t start = event.find(anchor, data);
  REQUIRE(start != std::string::npos);
  const std::size_t open = start + anchor.size() - 1;
  std::size_t close = open;
  for (int depth = 0; close < event.size(); ++close) {
    if (event[close] == '{') ++depth;
    if (event[close] == '}' && --depth == 0) break;
  }
  REQUIRE(close < event.size());
  event.replace(open, close - open + 1, object_json);
  return event;
}

}  // namespace bankworker::test
