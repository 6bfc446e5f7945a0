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

// What posix_spawn takes to start `program` with `args` and exactly the environment `env`, plus
// one thing inherited: this process's LSAN_OPTIONS unless `env` names it, so a child built with
// ASan checks its leaks against the suite's justified suppressions (tests/lsan.supp). Without
// them a worker whose query was cut by a PostgreSQL restart failed its exit on libpq's known
// leak (chaos run, seed 7413410892939058555). The other sanitizer options are not passed on:
// children keep the sanitizers' defaults, as before.
class spawn_arguments {
 public:
  spawn_arguments(const std::string& program, const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env);
  spawn_arguments(const spawn_arguments&) = delete;
  spawn_arguments& operator=(const spawn_arguments&) = delete;
  char* const* argv() const noexcept { return argv_.data(); }
  char* const* envp() const noexcept { return envp_.data(); }

 private:
  std::vector<std::string> argv_storage_;
  std::vector<std::string> env_storage_;
  std::vector<char*> argv_;
  std::vector<char*> envp_;
};

// Runs `program` with `args` and exactly the environment `env` (nothing inherited but the leak
// suppressions, see spawn_arguments), with a deadline: a child still running after
// `timeout_ms` is killed and the test fails.
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
