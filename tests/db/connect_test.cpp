// The connect timeout added to operators' connection strings: libpq must still parse the result,
// see the timeout, and keep every other setting, password included.
#include <catch2/catch.hpp>

#include <libpq-fe.h>

#include <map>
#include <string>

#include "db/connect.hpp"

using bankworker::db::add_connect_timeout;

namespace {

// What libpq reads from `conninfo`, by keyword (only the ones that have a value).
std::map<std::string, std::string> parsed_by_libpq(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    const std::string why = error ? error : "out of memory";
    PQfreemem(error);
    FAIL("libpq refused '" << conninfo << "': " << why);
  }
  std::map<std::string, std::string> values;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val != nullptr) values[option->keyword] = option->val;
  }
  PQconninfoFree(options);
  return values;
}

std::string with_timeout(std::string url, std::chrono::milliseconds timeout) {
  add_connect_timeout(url, timeout);
  return url;
}

}  // namespace

TEST_CASE("a connect timeout is added to URIs and key=value strings that libpq still parses whole", "[db][connect]") {
  using std::chrono::milliseconds;
  const auto uri = parsed_by_libpq(with_timeout("postgresql://runtime:p%40ss@db.example:6543/bankworker", milliseconds(7'000)));
  CHECK(uri.at("connect_timeout") == "7");
  CHECK(uri.at("password") == "p@ss");
  CHECK(uri.at("host") == "db.example");
  CHECK(uri.at("port") == "6543");
  CHECK(uri.at("dbname") == "bankworker");

  const auto with_query =
      parsed_by_libpq(with_timeout("postgres://runtime@127.0.0.1/bankworker?sslmode=require", milliseconds(1'500)));
  CHECK(with_query.at("connect_timeout") == "2");  // whole seconds, rounded up
  CHECK(with_query.at("sslmode") == "require");

  const auto no_path = parsed_by_libpq(with_timeout("postgresql://127.0.0.1", milliseconds(5'000)));
  CHECK(no_path.at("connect_timeout") == "5");
  CHECK(no_path.at("host") == "127.0.0.1");

  const auto key_value =
      parsed_by_libpq(with_timeout("host=127.0.0.1 dbname=bankworker password='a b\\'c'", milliseconds(3'000)));
  CHECK(key_value.at("connect_timeout") == "3");
  CHECK(key_value.at("password") == "a b'c");
}

TEST_CASE("a connection string that sets its own connect_timeout keeps it", "[db][connect]") {
  using std::chrono::milliseconds;
  CHECK(parsed_by_libpq(with_timeout("postgresql://h/db?connect_timeout=30", milliseconds(5'000))).at("connect_timeout") ==
        "30");
  CHECK(parsed_by_libpq(with_timeout("host=h connect_timeout=30", milliseconds(5'000))).at("connect_timeout") == "30");
}
