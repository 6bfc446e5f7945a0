#include "core/assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace bankworker::core {

namespace {

// The expression is source text, so it may hold quotes or backslashes; keep the line valid JSON.
void print_json_escaped(const char* text) noexcept {
  for (const char* c = text; *c != '\0'; ++c) {
    if (*c == '"' || *c == '\\') std::fputc('\\', stderr);
    std::fputc(*c, stderr);
  }
}

}  // namespace

void fail_assert(const char* expression, const char* file, int line) noexcept {
  std::fputs("{\"level\":\"fatal\",\"msg\":\"assertion failed\",\"expression\":\"", stderr);
  print_json_escaped(expression);
  std::fputs("\",\"at\":\"", stderr);
  print_json_escaped(file);
  std::fprintf(stderr, ":%d\"}\n", line);
  std::abort();
}

void fail_invariant(const char* expression, const char* file, int line) {
  throw invariant_violation(std::string("invariant failed: ") + expression + " at " + file + ":" +
                            std::to_string(line));
}

}  // namespace bankworker::core
