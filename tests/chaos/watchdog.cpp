#include "tests/chaos/watchdog.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace bankworker::chaos {

namespace {

// The signal that asked the run to stop (SIGTERM, SIGINT, SIGHUP), or 0. The handler only sets it;
// the watchdog's thread looks at it between waits and does the stopping.
volatile std::sig_atomic_t stop_signal = 0;

extern "C" void note_stop_signal(int signal_number) { stop_signal = signal_number; }

// Handled signals go back to their defaults across exec, so the workers and scripts started after
// this still stop on SIGTERM as before.
void catch_stop_signals() {
  struct sigaction action {};
  action.sa_handler = note_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (const int signal_number : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(signal_number, &action, nullptr);
}

}  // namespace

run_watchdog::run_watchdog(std::chrono::seconds budget, std::function<void()> stop_database)
    : budget_(budget), started_(std::chrono::steady_clock::now()), stop_database_(std::move(stop_database)) {
  catch_stop_signals();
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
  std::string why;
  {
    std::unique_lock lock(mutex_);
    const auto deadline = started_ + budget_;
    while (true) {
      const auto next = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
      if (disarmed_.wait_until(lock, next, [this] { return done_; })) return;
      if (stop_signal != 0) {
        why = "stopped by signal " + std::to_string(stop_signal);
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        why = "timeout after " + std::to_string(budget_.count()) + " s";
        std::cout << "chaos_run: TIMEOUT: the run has not finished after " << budget_.count()
                  << " s (its budget); stuck in: " << phase_ << std::endl;
        break;
      }
    }
    stuck_in = phase_;
  }
  end_run(why, stuck_in);
}

void run_watchdog::end_run(const std::string& why, const std::string& stuck_in) {
  const int killed = kill_children();
  std::cout << "chaos_run: " << why << "; killed " << killed
            << " child process(es); stopping PostgreSQL (its data and logs stay)" << std::endl;
  try {
    if (stop_database_) stop_database_();
  } catch (const std::exception& error) {
    std::cout << "chaos_run: stopping PostgreSQL failed: " << error.what() << std::endl;
  }
  std::cout << "result: FAIL — " << why << " in: " << stuck_in << std::endl;
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
