// copy_rows against the private PostgreSQL: every value arrives as written, across chunks.
#include <catch2/catch.hpp>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "db/copy_rows.hpp"
#include "tests/support/scratch_database.hpp"

using bankworker::test::scratch_database;
namespace db = bankworker::db;

namespace {

constexpr std::array<const char*, 4> columns{"id", "label", "note", "flag"};

struct copied_row {
  std::int64_t id = 0;
  std::string label;
  std::optional<std::string> note;
  bool flag = false;
};

}  // namespace

TEST_CASE("rows copied through copy_rows read back exactly, awkward text and NULLs included, across chunks",
          "[pg][copy]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  auto lease = connections->checkout();
  pqxx::work tx(lease.connection());
  tx.exec0("CREATE TEMPORARY TABLE copied (id bigint NOT NULL, label text NOT NULL, note text, flag boolean NOT NULL)");

  const std::vector<std::string> awkward{"",
                                         "\\",
                                         "\\N",
                                         "\\.",
                                         "tab\there",
                                         "line\nbreak",
                                         "carriage\rreturn",
                                         "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8F\xA6",
                                         "\x01\x1F\x7F control",
                                         std::string(300, '\\')};
  std::vector<copied_row> written;
  // Enough rows for several chunks: each row is over 1 KB.
  const std::string filler(1000, 'x');
  for (std::int64_t i = 0; i < 1000; ++i) {
    copied_row row;
    row.id = i - 500;
    row.label = awkward[static_cast<std::size_t>(i) % awkward.size()] + filler;
    if (i % 3 != 0) row.note = awkward[static_cast<std::size_t>(i * 7) % awkward.size()];
    row.flag = i % 2 == 0;
    written.push_back(std::move(row));
  }
  REQUIRE(written.size() * filler.size() > 3 * db::copy_rows::chunk_bytes);

  db::copy_rows copy(tx, "copied", columns);
  for (const copied_row& row : written) {
    db::copy_text& fields = copy.row();
    fields.number(row.id);
    fields.text(row.label);
    fields.text(row.note);
    fields.boolean(row.flag);
    copy.end_row();
  }
  copy.complete();

  const pqxx::result read = tx.exec("SELECT id, label, note, flag FROM copied ORDER BY id");
  REQUIRE(read.size() == written.size());
  for (std::size_t i = 0; i < written.size(); ++i) {
    INFO("row " << i);
    CHECK(read[static_cast<int>(i)][0].as<std::int64_t>() == written[i].id);
    CHECK(read[static_cast<int>(i)][1].as<std::string>() == written[i].label);
    CHECK(read[static_cast<int>(i)][2].is_null() == !written[i].note.has_value());
    if (written[i].note) CHECK(read[static_cast<int>(i)][2].as<std::string>() == *written[i].note);
    CHECK(read[static_cast<int>(i)][3].as<bool>() == written[i].flag);
  }
}

TEST_CASE("a NUL byte is refused by the server and nothing of the copy is kept", "[pg][copy]") {
  const scratch_database database;
  const auto connections = database.worker_pool(1);
  auto lease = connections->checkout();
  {
    pqxx::work tx(lease.connection());
    tx.exec0("CREATE TEMPORARY TABLE copied_nul (id bigint NOT NULL, label text NOT NULL, note text, flag boolean NOT NULL)");
    tx.commit();
  }
  {
    pqxx::work tx(lease.connection());
    const auto attempt = [&] {
      db::copy_rows copy(tx, "copied_nul", columns);
      db::copy_text& fields = copy.row();
      fields.number(1);
      fields.text(std::string("nul\0inside", 10));
      fields.null();
      fields.boolean(true);
      copy.end_row();
      copy.complete();
    };
    CHECK_THROWS_AS(attempt(), pqxx::data_exception);
  }
  pqxx::work check(lease.connection());
  CHECK(check.exec1("SELECT count(*) FROM copied_nul")[0].as<int>() == 0);
}
