#pragma once
// A child process the test keeps running while it does other things: read its output line by
// line, signal it (SIGTERM, SIGKILL), wait for it. run_process (process.hpp) covers the simple case.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bankworker::test {

class child_process {
 public:
  // Starts `program` with `args` and exactly `env` (and the leak suppressions, see
  // spawn_arguments in process.hpp); stdout is piped to this object, stderr goes
  // to the test's stderr so failures are visible.
  child_process(const std::string& program, const std::vector<std::string>& args,
                const std::map<std::string, std::string>& env);
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  // Kills (SIGKILL) and reaps a child still running.
  ~child_process();

  pid_t pid() const noexcept { return pid_; }
  // The next stdout line, or nothing when none arrived within `timeout` or stdout closed.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  void signal(int number);
  // Exit code, -1 when killed by a signal; nothing if it is still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string buffer_;
  bool reaped_ = false;
  int status_ = 0;
};

// For a simulator started with --port 0: its base URL, from the first line it prints
// ("listening on http://127.0.0.1:PORT"). Throws when that line does not come within `timeout`.
std::string base_url_from(child_process& process, std::chrono::milliseconds timeout = std::chrono::seconds(120));

}  // namespace bankworker::test
