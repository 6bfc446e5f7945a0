#pragma once
// Text of a PostgreSQL array literal, for passing many values as one parameter ($1::text[]).
// Every element is quoted with backslash and quote escaped, so any text survives; an absent
// optional is NULL. binary_text_array is the same for long texts in PostgreSQL's binary format.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bankworker::db {

class array_text {
 public:
  void add(std::optional<std::string_view> element) {
    if (text_.size() > 1) text_.push_back(',');
    if (!element) {
      text_ += "NULL";
      return;
    }
    text_.push_back('"');
    // The runs between characters to escape are copied whole: a 2 KB event body is a few dozen
    // appends, not 2,000 single-byte pushes.
    const char* run = element->data();
    const char* const end = run + element->size();
    for (const char* at = run; at != end; ++at) {
      if (*at != '"' && *at != '\\') continue;
      text_.append(run, at);
      text_.push_back('\\');
      text_.push_back(*at);
      run = at + 1;
    }
    text_.append(run, end);
    text_.push_back('"');
  }
  void add(const std::string& element) { add(std::optional<std::string_view>(element)); }
  void add(std::string_view element) { add(std::optional<std::string_view>(element)); }
  void add(const char* element) { add(std::optional<std::string_view>(element)); }
  // Room for `bytes` more of elements, so long ones (event bodies) are not copied as it grows.
  void reserve(std::size_t bytes) { text_.reserve(text_.size() + bytes + 1); }
  bool empty() const noexcept { return text_.size() == 1; }
  // Closes the literal and returns it (no copy); call once, after the last add().
  const std::string& finish() {
    text_.push_back('}');
    return text_;
  }

 private:
  std::string text_ = "{";
};

// An array of texts (no NULLs) in PostgreSQL's binary array format, as array_recv reads it: a
// header (dimensions, flags, element type text), then each element's length and bytes. For long
// elements (event bodies): nothing is escaped here and nothing parsed there, where the literal of
// array_text costs an escaping pass in the worker and array_in's character-by-character parse in
// PostgreSQL. Pass finish() as a binary parameter (pqxx::binarystring) for a $n::text[]
// placeholder. The server checks each element's encoding as it does any text, so an element that
// is not valid UTF-8, or holds a NUL, fails the statement.
class binary_text_array {
 public:
  binary_text_array() : bytes_(header_bytes, '\0') {}
  void add(std::string_view element) {
    append_u32(static_cast<std::uint32_t>(element.size()));
    bytes_.append(element);
    ++count_;
  }
  // Room for `bytes` more of elements (their lengths included by the caller or not: 4 each).
  void reserve(std::size_t bytes) { bytes_.reserve(bytes_.size() + bytes); }
  std::size_t size() const noexcept { return count_; }
  // Writes the header and returns the array's bytes (no copy); call once, after the last add().
  const std::string& finish() {
    constexpr std::uint32_t text_type = 25;  // pg_type.oid of text
    // An empty array has no dimension, so no length and lower bound: its header is 12 bytes.
    if (count_ == 0) bytes_.resize(empty_header_bytes);
    char* at = bytes_.data();
    at = put_u32(at, count_ == 0 ? 0 : 1);  // dimensions
    at = put_u32(at, 0);                    // flags: no NULL elements
    at = put_u32(at, text_type);
    if (count_ == 0) return bytes_;
    at = put_u32(at, static_cast<std::uint32_t>(count_));  // the dimension's length
    put_u32(at, 1);                                         // and its lower bound
    return bytes_;
  }

 private:
  static constexpr std::size_t header_bytes = 20, empty_header_bytes = 12;
  // Writes `value` big-endian (network order, as array_recv reads it) at `at`; returns the end.
  static char* put_u32(char* at, std::uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) *at++ = static_cast<char>((value >> shift) & 0xff);
    return at;
  }
  void append_u32(std::uint32_t value) {
    char bytes[4];
    put_u32(bytes, value);
    bytes_.append(bytes, 4);
  }
  std::string bytes_;
  std::size_t count_ = 0;
};

}  // namespace bankworker::db
