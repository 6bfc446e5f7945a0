#pragma once
// What this binary is: the project version and the git commit it was built from ("unknown" when
// built outside a git checkout). The commit is written into one generated file at configure time
// (worker/build_info.cpp.in), so a new commit recompiles that file only, not every target.

#include <string_view>

namespace bankworker::worker {

std::string_view build_version() noexcept;
std::string_view build_commit() noexcept;

}  // namespace bankworker::worker
