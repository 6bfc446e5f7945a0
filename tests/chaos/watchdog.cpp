#include "tests/chaos/watchdog.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace bankworker::chaos {

run_watchdog::run_watchdog(std::chrono::seconds budget, std::function<void()> stop_database)
    : budget_(budget), started_(std::chrono::steady_clock::now()), stop_database_(std::move(stop_database)) {
  thread_ = std::thread([this] { watch(); });
}

run_watchdog::~run_watchdog() {
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  disarmed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void run_watchdog::phase(std::string name) {
  std::lock_guard lock(mutex_);
  phase_ = std::move(name);
}

void run_watchdog::watch() {
  std::string stuck_in;
  {
    std::unique_lock lock(mutex_);
    if (disarmed_.wait_until(lock, started_ + budget_, [this] { return done_; })) return;
    stuck_in = phase_;
  }
  std::cout << "chaos_run: TIMEOUT: the run has not finished after " << budget_.count() << " s (its budget); stuck in: "
            << stuck_in << std::endl;
  const int killed = kill_children();
  std::cout << "chaos_run: killed " << killed << " child process(es); stopping PostgreSQL (its data and logs stay)"
            << std::endl;
  try {
    if (stop_database_) stop_database_();
  } catch (const std::exception& error) {
    std::cout << "chaos_run: stopping PostgreSQL failed: " << error.what() << std::endl;
  }
  std::cout << "result: FAIL — timeout after " << budget_.count() << " s in: " << stuck_in << std::endl;
  std::_Exit(1);
}

int kill_children() noexcept {
  int killed = 0;
  try {
    const pid_t self = ::getpid();
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(entry.path() / "stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      // "pid (comm) state ppid …": comm may hold spaces and parentheses, so read after the last ')'.
      const std::size_t close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 1));
      char state = 0;
      long parent = 0;
      if (!(rest >> state >> parent) || parent != self) continue;
      if (::kill(static_cast<pid_t>(std::stol(name)), SIGKILL) == 0) ++killed;
    }
  } catch (const std::exception&) {
    // /proc unreadable: nothing more to do; the caller exits anyway.
  }
  return killed;
}

}  // namespace bankworker::chaos
