#pragma once
// Text of a PostgreSQL array literal, for passing many values as one parameter ($1::text[]).
// Every element is quoted with backslash and quote escaped, so any text survives; an absent
// optional is NULL.

#include <cstddef>
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

}  // namespace bankworker::db
