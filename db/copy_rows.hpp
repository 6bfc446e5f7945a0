#pragma once
// Rows for COPY … FROM STDIN in PostgreSQL's text format, escaped straight into one buffer and
// sent in large chunks.
//
// libpqxx 6.4's stream_to builds every field as a string of its own through TypedCopyEscaper
// (which also writes every byte outside printable ASCII as a four-byte octal escape), joins them
// into another string per row and sends each row in its own call: under sync_bench that was about
// a fifth of the worker's CPU (perf: the escaper 11.5 %, with the malloc and free of its strings
// several more). Here a field is appended in runs between the four bytes the format requires to
// be escaped, and a chunk of many rows goes out in one call (the COPY data stream has no row
// framing, so a chunk may end anywhere after a row).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <pqxx/pqxx>

namespace pqxx {
class tablewriter;
}

namespace bankworker::db {

// The text of rows in COPY's text format: fields separated by tabs, rows ended by newlines, NULL
// as \N, and backslash, tab, newline and carriage return escaped. Other bytes go as they are: the
// server checks the encoding (a NUL byte is refused there, as text cannot hold it).
class copy_text {
 public:
  void text(std::string_view value);
  void text(const std::string& value) { text(std::string_view(value)); }
  void text(const char* value) { text(std::string_view(value)); }
  void text(const std::optional<std::string>& value) {
    if (value) text(std::string_view(*value));
    else null();
  }
  void number(std::int64_t value);
  void boolean(bool value) { field_start().push_back(value ? 't' : 'f'); }
  void null() { field_start().append("\\N"); }
  void end_row() {
    text_.push_back('\n');
    row_open_ = false;
  }

  const std::string& str() const noexcept { return text_; }
  std::size_t size() const noexcept { return text_.size(); }
  bool empty() const noexcept { return text_.empty(); }
  void clear() noexcept { text_.clear(); }
  void reserve(std::size_t bytes) { text_.reserve(bytes); }
  // For the writer: drops the newline of the last row, which the connection adds back when sending.
  std::string& without_last_newline();

 private:
  std::string& field_start() {
    if (row_open_) text_.push_back('\t');
    row_open_ = true;
    return text_;
  }

  std::string text_;
  bool row_open_ = false;
};

// A COPY of rows into `table` (its `columns` in that order) inside tx. Write each row's fields in
// column order through row(), end each with end_row(), then complete(). Nothing is visible to tx
// before complete() returns; an exception midway leaves tx unusable (roll it back).
class copy_rows {
 public:
  // Chunks sent to the server are about this size; a chunk is copied once by libpqxx on its way.
  static constexpr std::size_t chunk_bytes = 256 * 1024;

  copy_rows(pqxx::transaction_base& tx, const std::string& table, std::span<const char* const> columns);
  ~copy_rows();
  copy_rows(const copy_rows&) = delete;
  copy_rows& operator=(const copy_rows&) = delete;

  copy_text& row() noexcept { return text_; }
  void end_row() {
    text_.end_row();
    if (text_.size() >= chunk_bytes) send();
  }
  void complete();

 private:
  void send();

  // pqxx::tablewriter, the one writer in libpqxx 6.4 whose raw line writer is public (stream_to's
  // is private); held by pointer so that its deprecation stays inside copy_rows.cpp.
  std::unique_ptr<pqxx::tablewriter> writer_;
  copy_text text_;
};

}  // namespace bankworker::db
