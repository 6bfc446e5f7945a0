#pragma once
// A long-running child process for tests (a simulator, a worker): started with a deadline on its
// first line of output (simulators print "listening on http://127.0.0.1:PORT"), stopped with
// SIGTERM at scope exit, and killed with the test process if that dies first.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace bankworker::test {

class child_process {
 public:
  // Starts `program` with `args`; `env` replaces the environment when not empty.
  child_process(const std::string& program, const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env = {});
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  // The next line of standard output; throws when none comes within `timeout`.
  std::string read_line(std::chrono::milliseconds timeout);
  // Sends SIGTERM (or `signal`) and waits up to `timeout`; returns the exit status (-1 if killed).
  int stop(int signal_number = 15, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
  std::string buffered_;
};

// Starts a simulator on port 0 and returns its base URL from its first line.
std::string base_url_from(child_process& process, std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace bankworker::test
