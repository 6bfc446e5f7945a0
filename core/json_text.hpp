#pragma once
// Writing JSON by hand where a document is a few fixed members (log lines, --json output): the
// one piece that must be exactly right is escaping a string.

#include <string>
#include <string_view>

namespace bankworker::core {

// Appends `text` as a JSON string literal, quotes included. Control characters are \u-escaped;
// bytes >= 0x80 are copied as they are (the caller's text is UTF-8).
void append_json_string(std::string_view text, std::string& out);

}  // namespace bankworker::core
