#include <catch2/catch.hpp>

#include <thread>

#include <pqxx/pqxx>

#include "db/migrate.hpp"
#include "tests/support/scratch_database.hpp"

using namespace bankworker::db;
using bankworker::test::scratch_database;

namespace {

// The embedded migrations as an editable list (names and text owned here).
struct migration_list {
  std::vector<std::pair<std::string, std::string>> files;
  std::vector<migration> view;

  migration_list() {
    for (const migration& m : embedded_migrations()) files.emplace_back(m.name, m.sql);
  }
  std::span<const migration> span() {
    view.clear();
    for (const auto& [name, sql] : files) view.push_back({name, sql});
    return view;
  }
};

std::vector<std::pair<std::string, std::string>> recorded(pqxx::connection& connection) {
  pqxx::work tx(connection);
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& row : tx.exec("SELECT name, checksum FROM bankworker.schema_migrations ORDER BY name")) {
    rows.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
  }
  return rows;
}

bool table_exists(pqxx::connection& connection, const std::string& name) {
  pqxx::work tx(connection);
  return tx.exec_params1("SELECT to_regclass($1) IS NOT NULL", name)[0].as<bool>();
}

}  // namespace

TEST_CASE("migrations apply to an empty database in order, recorded with their SHA-256", "[pg][migrate]") {
  const scratch_database database(false);
  const auto connection = database.connect_as_admin();
  const migration_report report = apply_migrations(*connection, embedded_migrations());

  REQUIRE(report.applied.size() == embedded_migrations().size());
  CHECK(report.already_applied == 0);
  const auto rows = recorded(*connection);
  REQUIRE(rows.size() == embedded_migrations().size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(rows[i].first == embedded_migrations()[i].name);
    CHECK(rows[i].second == migration_checksum(embedded_migrations()[i].sql));
  }
  CHECK(table_exists(*connection, "bankworker.tenants"));
  CHECK(table_exists(*connection, "bankworker.journal_lines"));
  CHECK(pending_migrations(*connection, embedded_migrations()).empty());
}

TEST_CASE("re-applying migrations is a no-op", "[pg][migrate]") {
  const scratch_database database;  // already migrated once
  const auto connection = database.connect_as_admin();
  const auto before = recorded(*connection);
  const migration_report report = apply_migrations(*connection, embedded_migrations());
  CHECK(report.applied.empty());
  CHECK(report.already_applied == embedded_migrations().size());
  CHECK(recorded(*connection) == before);
}

TEST_CASE("an edited applied migration is refused by name and nothing is applied", "[pg][migrate]") {
  const scratch_database database;
  const auto connection = database.connect_as_admin();
  migration_list list;
  list.files.back().second += "\n-- an innocent-looking edit\n";
  list.files.emplace_back("9000_after_the_edit.sql", "CREATE TABLE bankworker.should_not_exist (x int);");

  const auto before = recorded(*connection);
  CHECK_THROWS_WITH(apply_migrations(*connection, list.span()),
                    Catch::Contains(list.files[list.files.size() - 2].first) && Catch::Contains("edited"));
  CHECK(recorded(*connection) == before);
  CHECK_FALSE(table_exists(*connection, "bankworker.should_not_exist"));
  CHECK_THROWS_AS(pending_migrations(*connection, list.span()), migration_error);
}

TEST_CASE("a new migration applies alone; one the binary does not know is refused", "[pg][migrate]") {
  const scratch_database database;
  const auto connection = database.connect_as_admin();
  migration_list list;
  list.files.emplace_back("9000_add_probe.sql",
                          "SET LOCAL ROLE bankworker_owner; CREATE TABLE bankworker.probe (x int);");
  CHECK(pending_migrations(*connection, list.span()) == std::vector<std::string>{"9000_add_probe.sql"});
  const migration_report report = apply_migrations(*connection, list.span());
  CHECK(report.applied == std::vector<std::string>{"9000_add_probe.sql"});
  {
    pqxx::work tx(*connection);
    CHECK(tx.exec1("SELECT tableowner FROM pg_tables WHERE tablename = 'probe'")[0].as<std::string>() ==
          "bankworker_owner");
  }
  CHECK_THROWS_WITH(apply_migrations(*connection, embedded_migrations()),
                    Catch::Contains("9000_add_probe.sql") && Catch::Contains("unknown to this binary"));
}

TEST_CASE("a failing migration is rolled back whole and not recorded", "[pg][migrate]") {
  const scratch_database database;
  const auto connection = database.connect_as_admin();
  migration_list list;
  list.files.emplace_back("9000_half_done.sql",
                          "CREATE TABLE bankworker.half_done (x int); SELECT 1 / 0;");
  CHECK_THROWS_WITH(apply_migrations(*connection, list.span()),
                    Catch::Contains("9000_half_done.sql") && Catch::Contains("rolled back"));
  CHECK_FALSE(table_exists(*connection, "bankworker.half_done"));
  CHECK(recorded(*connection).size() == embedded_migrations().size());
}

TEST_CASE("misnamed or out-of-order migrations are refused before touching the database", "[pg][migrate]") {
  const scratch_database database;
  const auto connection = database.connect_as_admin();
  migration_list misnamed;
  misnamed.files.emplace_back("9000-bad name.sql", "SELECT 1");
  CHECK_THROWS_WITH(apply_migrations(*connection, misnamed.span()), Catch::Contains("NNNN_name.sql"));

  migration_list older;
  older.files.emplace_back("9001_newest.sql", "SELECT 1");
  apply_migrations(*connection, older.span());
  older.files.emplace_back("9000_older.sql", "SELECT 1");
  std::swap(older.files[older.files.size() - 1], older.files[older.files.size() - 2]);
  CHECK_THROWS_WITH(apply_migrations(*connection, older.span()), Catch::Contains("older than the applied"));
}

TEST_CASE("two migrators racing on one database apply every migration exactly once", "[pg][migrate]") {
  const scratch_database database(false);
  std::vector<migration_report> reports(2);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    threads.emplace_back([&, i] {
      pqxx::connection connection(database.url());
      reports[i] = apply_migrations(connection, embedded_migrations());
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(reports[0].applied.size() + reports[1].applied.size() == embedded_migrations().size());
  const auto connection = database.connect_as_admin();
  CHECK(recorded(*connection).size() == embedded_migrations().size());
}

TEST_CASE("schema_check answers as pending_migrations does, in one statement, as the worker role", "[pg][migrate]") {
  {
    const scratch_database empty(false);
    const auto connection = empty.connect_as_admin();
    CHECK(schema_check(embedded_migrations()).pending(*connection).size() == embedded_migrations().size());
  }
  const scratch_database database;
  const auto connection = database.connect_as_admin();
  const auto pool = database.worker_pool();
  auto lease = pool->checkout();
  CHECK(schema_check(embedded_migrations()).pending(lease.connection()).empty());

  migration_list added;
  added.files.emplace_back("9000_add_probe.sql", "SELECT 1;");
  const schema_check with_new(added.span());
  CHECK(with_new.pending(lease.connection()) == std::vector<std::string>{"9000_add_probe.sql"});

  migration_list edited;
  edited.files.back().second += "\n-- an innocent-looking edit\n";
  const schema_check with_edit(edited.span());
  CHECK_THROWS_WITH(with_edit.pending(lease.connection()), Catch::Contains("edited"));

  migration_list missing;
  missing.files.pop_back();
  const schema_check without_newest(missing.span());
  CHECK_THROWS_WITH(without_newest.pending(lease.connection()), Catch::Contains("unknown to this binary"));
}
