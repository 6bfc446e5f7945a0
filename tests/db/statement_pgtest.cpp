#include <catch2/catch.hpp>

#include <memory>

#include <pqxx/pqxx>

#include "db/sql_array.hpp"
#include "db/statement.hpp"
#include "tests/support/scratch_database.hpp"

using namespace bankworker::db;
using bankworker::test::scratch_database;

namespace {

constexpr statement sum_sql{"test_statement_sum", "SELECT $1::integer + $2::integer"};

// How many statements of that name the server holds for this session, and when it prepared them.
pqxx::row prepared_on_server(pqxx::work& tx, const char* name) {
  return tx.exec_params1("SELECT count(*), max(prepare_time) FROM pg_prepared_statements WHERE name = $1", name);
}

// One scratch database and a pool of one connection, so every statement runs on the same session.
struct one_connection {
  const scratch_database database;
  const std::unique_ptr<pool> connections = database.worker_pool(settings());
  pool::lease lease = connections->checkout();

  static pool_settings settings() {
    pool_settings s;
    s.connections = 1;
    return s;
  }
};

}  // namespace

TEST_CASE("a named statement is prepared on its connection at first use and reused after that",
          "[pg][statement]") {
  one_connection session;
  pool::lease& lease = session.lease;

  std::string prepared_at;
  {
    pqxx::work tx(lease.connection());
    CHECK(prepared_on_server(tx, sum_sql.name)[0].as<int>() == 0);
    CHECK(exec_statement(tx, sum_sql, 2, 3)[0][0].as<int>() == 5);
    const pqxx::row after = prepared_on_server(tx, sum_sql.name);
    CHECK(after[0].as<int>() == 1);
    prepared_at = after[1].as<std::string>();
    CHECK(exec_statement(tx, sum_sql, 4, 3)[0][0].as<int>() == 7);
    tx.commit();
  }
  {
    pqxx::work tx(lease.connection());
    CHECK(exec_statement(tx, sum_sql, 10, 1)[0][0].as<int>() == 11);
    const pqxx::row again = prepared_on_server(tx, sum_sql.name);
    CHECK(again[0].as<int>() == 1);
    CHECK(again[1].as<std::string>() == prepared_at);  // not prepared a second time
  }
}

TEST_CASE("a statement first used in a transaction that rolls back still runs in the next one",
          "[pg][statement]") {
  // plaid.sync's first apply can roll back after its INSERT was prepared (a transaction id that
  // already exists under another connection) and then applies again on the same connection.
  one_connection session;
  pool::lease& lease = session.lease;
  {
    pqxx::work tx(lease.connection());
    CHECK(exec_statement(tx, sum_sql, 1, 1)[0][0].as<int>() == 2);
    CHECK_THROWS_AS(tx.exec("SELECT 1 / 0"), pqxx::data_exception);
  }
  pqxx::work tx(lease.connection());
  CHECK(exec_statement(tx, sum_sql, 20, 22)[0][0].as<int>() == 42);
}

TEST_CASE("a second statement under a name already in use is refused rather than run", "[pg][statement]") {
  one_connection session;
  pool::lease& lease = session.lease;
  pqxx::work tx(lease.connection());
  CHECK(exec_statement(tx, sum_sql, 2, 2)[0][0].as<int>() == 4);
  constexpr statement other{"test_statement_sum", "SELECT $1::integer * $2::integer"};
  CHECK_THROWS_AS(exec_statement(tx, other, 2, 3), pqxx::argument_error);
  CHECK(exec_statement(tx, sum_sql, 2, 3)[0][0].as<int>() == 5);
}

TEST_CASE("a binary text array reaches the server as the texts given, and bad UTF-8 is refused", "[pg][statement]") {
  one_connection session;
  constexpr statement unnest_sql{"test_statement_unnest_binary",
                                 "SELECT t, octet_length(t), cardinality($1::text[]) FROM unnest($1::text[]) AS t"};
  const std::vector<std::string> texts = {R"({"a":"quo\"te","b":"back\\slash"})", "", "{\"x\"}, NULL", "€ and ü",
                                          std::string(5000, 'z')};
  binary_text_array array;
  for (const auto& text : texts) array.add(text);
  const std::string& bytes = array.finish();
  {
    pqxx::work tx(session.lease.connection());
    const pqxx::result rows = exec_statement(tx, unnest_sql, pqxx::binarystring(bytes.data(), bytes.size()));
    REQUIRE(rows.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      CHECK(rows[i][0].as<std::string>() == texts[i]);
      CHECK(rows[i][1].as<std::size_t>() == texts[i].size());
      CHECK(rows[i][2].as<std::size_t>() == texts.size());
    }
  }
  binary_text_array none;
  const std::string& empty = none.finish();
  {
    pqxx::work tx(session.lease.connection());
    CHECK(exec_statement(tx, unnest_sql, pqxx::binarystring(empty.data(), empty.size())).empty());
  }
  binary_text_array bad;
  bad.add("ok");
  bad.add(std::string("\xff\xfe not UTF-8"));
  const std::string& bad_bytes = bad.finish();
  pqxx::work tx(session.lease.connection());
  CHECK_THROWS_AS(exec_statement(tx, unnest_sql, pqxx::binarystring(bad_bytes.data(), bad_bytes.size())),
                  pqxx::data_exception);
}
