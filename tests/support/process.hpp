#pragma once
// Runs the real bankworker binary (or any program) as a child process and collects its output.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bankworker::test {

struct process_result {
  int exit_code = -1;  // -1 when it did not exit normally
  std::string out;
  std::string err;
};

// Runs `program` with `args` and exactly the environment `env` (nothing inherited), with a
// deadline: a child still running after `timeout_ms` is killed and the test fails.
process_result run_process(const std::string& program, const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env, int timeout_ms = 60'000);

// The bankworker binary built beside the tests.
process_result run_bankworker(const std::vector<std::string>& args, const std::map<std::string, std::string>& env);

// A loopback TCP port that was free a moment ago (bound to 0, read back, closed), for a child's
// listener. Another process may take it in between; tests that start one listener accept that.
std::uint16_t free_loopback_port();

// Lines of `text` (without their newlines), ignoring a final empty line.
std::vector<std::string> lines_of(const std::string& text);

}  // namespace bankworker::test
