#pragma once
// Two assertion tiers (STYLE.md §4).
//
// BW_ASSERT is for programmer errors and compiles away in release builds. BW_INVARIANT is always
// on and throws core::invariant_violation, which the job boundary turns into a failed job: use it
// for anything touching money or a job's state. Neither is for external input: malformed input is
// an error value, never an assertion.

#include <stdexcept>
#include <string>

namespace bankworker::core {

// Thrown when an always-on invariant does not hold. The job fails permanently; the process lives.
class invariant_violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] void fail_assert(const char* expression, const char* file, int line) noexcept;
[[noreturn]] void fail_invariant(const char* expression, const char* file, int line);

}  // namespace bankworker::core

#ifdef NDEBUG
// The condition stays an unevaluated operand, so a variable read only by an assertion still counts
// as used in a release build (-Werror=unused-variable under CI otherwise breaks `make demo`).
#define BW_ASSERT(condition) static_cast<void>(sizeof(!(condition)))
#else
#define BW_ASSERT(condition) \
  ((condition) ? static_cast<void>(0) : ::bankworker::core::fail_assert(#condition, __FILE__, __LINE__))
#endif

#define BW_INVARIANT(condition) \
  ((condition) ? static_cast<void>(0) : ::bankworker::core::fail_invariant(#condition, __FILE__, __LINE__))
