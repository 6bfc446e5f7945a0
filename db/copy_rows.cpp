#include "db/copy_rows.hpp"

#include <charconv>
#include <string>

#include <pqxx/tablewriter>

#include "core/assert.hpp"

namespace bankworker::db {

void copy_text::text(std::string_view value) {
  std::string& out = field_start();
  // The runs between bytes to escape are appended whole.
  const char* run = value.data();
  const char* const end = run + value.size();
  for (const char* at = run; at != end; ++at) {
    char escaped = 0;
    switch (*at) {
      case '\\': escaped = '\\'; break;
      case '\t': escaped = 't'; break;
      case '\n': escaped = 'n'; break;
      case '\r': escaped = 'r'; break;
      default: continue;
    }
    out.append(run, at);
    out.push_back('\\');
    out.push_back(escaped);
    run = at + 1;
  }
  out.append(run, end);
}

void copy_text::number(std::int64_t value) {
  char digits[24];
  const std::to_chars_result written = std::to_chars(digits, digits + sizeof digits, value);
  BW_ASSERT(written.ec == std::errc());
  field_start().append(digits, written.ptr);
}

std::string& copy_text::without_last_newline() {
  BW_ASSERT(!row_open_);
  BW_ASSERT(!text_.empty());
  BW_ASSERT(text_.back() == '\n');
  text_.pop_back();
  return text_;
}

copy_rows::copy_rows(pqxx::transaction_base& tx, const std::string& table, std::span<const char* const> columns) {
  BW_ASSERT(!columns.empty());
  text_.reserve(chunk_bytes + chunk_bytes / 4);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  // Neither the table nor the columns are quoted: both are constants of ours.
  writer_ = std::make_unique<pqxx::tablewriter>(tx, table, columns.begin(), columns.end());
#pragma GCC diagnostic pop
}

copy_rows::~copy_rows() = default;

void copy_rows::send() {
  if (text_.empty()) return;
  writer_->write_raw_line(text_.without_last_newline());
  text_.clear();
}

void copy_rows::complete() {
  send();
  writer_->complete();
}

}  // namespace bankworker::db
