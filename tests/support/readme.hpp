#pragma once
// Code blocks of README.md, so that tests run what the README tells users to run, exactly as
// written: the fenced block that follows a marker line `<!-- name -->`.

#include <string>
#include <string_view>

namespace bankworker::test {

// The body of the first fenced code block after `<!-- marker -->` in README.md (without its
// fences); fails the test when the marker or its block is missing.
std::string readme_block(std::string_view marker);

}  // namespace bankworker::test
