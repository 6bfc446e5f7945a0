#include "tests/chaos/cluster.hpp"

#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <stdexcept>

#include "tests/support/process.hpp"

namespace bankworker::chaos {

namespace {

// initdb, start and stop of a small cluster on a loaded machine.
constexpr int pg_command_timeout_ms = 180'000;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

private_cluster::private_cluster(std::filesystem::path source_dir) : script_(source_dir / "scripts" / "pg") {
  std::string pattern = (std::filesystem::temp_directory_path() / "bankworker-chaos-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  parent_ = pattern;
  // As root, scripts/pg hands parent_/pg to the unprivileged server user, who must reach it.
  ::chmod(parent_.c_str(), 0755);
  url_ = trimmed(run_pg("start"));
}

private_cluster::~private_cluster() {
  try {
    run_pg("destroy");
  } catch (const std::exception&) {
    // Nothing more to do: the directory is removed below whatever the server did.
  }
  std::error_code ignored;
  std::filesystem::remove_all(parent_, ignored);
}

void private_cluster::stop() { run_pg("stop"); }

void private_cluster::start() {
  const std::string url = trimmed(run_pg("start"));
  if (url != url_) throw std::runtime_error("PostgreSQL came back on another port: " + url);
}

std::string private_cluster::run_pg(const std::string& command) const {
  std::map<std::string, std::string> env{{"BANKWORKER_PG_DIR", (parent_ / "pg").string()}};
  const char* path = std::getenv("PATH");
  env["PATH"] = path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  const auto result = test::run_process(script_.string(), {command}, env, pg_command_timeout_ms);
  if (result.exit_code != 0) {
    throw std::runtime_error("scripts/pg " + command + " failed (" + std::to_string(result.exit_code) + "): " + result.err);
  }
  return result.out;
}

}  // namespace bankworker::chaos
