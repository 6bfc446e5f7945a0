#pragma once
// Text of a PostgreSQL array literal, for passing many values as one parameter ($1::text[]).
// Every element is quoted with backslash and quote escaped, so any text survives; an absent
// optional is NULL.

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
    for (const char c : *element) {
      if (c == '"' || c == '\\') text_.push_back('\\');
      text_.push_back(c);
    }
    text_.push_back('"');
  }
  void add(const std::string& element) { add(std::optional<std::string_view>(element)); }
  void add(std::string_view element) { add(std::optional<std::string_view>(element)); }
  void add(const char* element) { add(std::optional<std::string_view>(element)); }
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
