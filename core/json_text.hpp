#pragma once
// Writing JSON by hand where a document is a few fixed members (log lines, --json output): the
// one piece that must be exactly right is escaping a string.

#include <cstddef>
#include <string>
#include <string_view>

namespace bankworker::core {

// Appends `text` as a JSON string literal, quotes included. Control characters are \u-escaped;
// bytes >= 0x80 are copied as they are (the caller's text is UTF-8).
void append_json_string(std::string_view text, std::string& out);

// The same literal without a std::string, for documents built in guarded memory (request bodies
// holding credentials): how many bytes it takes, and writing them at `out`, which has room for
// json_string_bytes(text). Returns the end of what was written.
std::size_t json_string_bytes(std::string_view text) noexcept;
char* write_json_string(std::string_view text, char* out) noexcept;

}  // namespace bankworker::core
