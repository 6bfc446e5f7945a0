// COPY's text format as copy_text writes it: what must be escaped is, and nothing else changes.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "db/copy_rows.hpp"

using bankworker::db::copy_text;

TEST_CASE("copy_text separates fields by tabs, ends rows with newlines and writes NULL as \\N", "[copy]") {
  copy_text rows;
  rows.text("a");
  rows.number(-42);
  rows.boolean(true);
  rows.null();
  rows.end_row();
  rows.text(std::optional<std::string>());
  rows.text(std::optional<std::string>("b"));
  rows.number(std::numeric_limits<std::int64_t>::min());
  rows.boolean(false);
  rows.end_row();
  CHECK(rows.str() == "a\t-42\tt\t\\N\n\\N\tb\t-9223372036854775808\tf\n");
}

TEST_CASE("copy_text escapes backslash, tab, newline and carriage return, and only those", "[copy]") {
  copy_text rows;
  rows.text("back\\slash\ttab\nnewline\rreturn \\N caf\xC3\xA9 \x01\x7F");
  rows.end_row();
  CHECK(rows.str() == "back\\\\slash\\ttab\\nnewline\\rreturn \\\\N caf\xC3\xA9 \x01\x7F\n");
}

TEST_CASE("copy_text keeps an empty text apart from NULL, and escapes at either end of a field", "[copy]") {
  copy_text rows;
  rows.text("");
  rows.null();
  rows.text("\\");
  rows.text("\t\n");
  rows.end_row();
  CHECK(rows.str() == "\t\\N\t\\\\\t\\t\\n\n");
}
