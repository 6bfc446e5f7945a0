#include "tests/support/readme.hpp"

#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

namespace bankworker::test {

std::string readme_block(std::string_view marker) {
  std::ifstream file(BANKWORKER_README);
  REQUIRE(file.good());
  std::stringstream text;
  text << file.rdbuf();
  const std::string readme = text.str();
  const std::size_t at = readme.find("<!-- " + std::string(marker) + " -->");
  INFO("README.md has no marker <!-- " << marker << " -->");
  REQUIRE(at != std::string::npos);
  const std::size_t fence = readme.find("```", at);
  REQUIRE(fence != std::string::npos);
  const std::size_t body = readme.find('\n', fence);
  REQUIRE(body != std::string::npos);
  const std::size_t end = readme.find("\n```", body);
  REQUIRE(end != std::string::npos);
  return readme.substr(body + 1, end - body);
}

}  // namespace bankworker::test
