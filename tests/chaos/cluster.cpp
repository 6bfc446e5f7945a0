#include "tests/chaos/cluster.hpp"

#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <stdexcept>

#include <pqxx/pqxx>

#include "tests/support/process.hpp"

namespace bankworker::chaos {

namespace {

// initdb, start and stop of a small cluster on a loaded machine.
constexpr int pg_command_timeout_ms = 180'000;
// scripts/pg-ha failover: up to 60 s for pg_autoctl's switchover, then its remedies for an old
// primary that does not rejoin, each after the one before has had its time (70 s from the start, 60 s
// and 90 s later; scripts/pg-ha settle_after_failover), and 180 s for a rebuilt standby.
constexpr int failover_timeout_ms = 480'000;

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

namespace {

std::filesystem::path make_parent() {
  std::string pattern = (std::filesystem::temp_directory_path() / "bankworker-failover-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  // As root, scripts/pg-ha hands parent/pg-ha to the unprivileged server user, who must reach it.
  ::chmod(pattern.c_str(), 0755);
  return pattern;
}

// `url` with its host list replaced by `host` and its query dropped.
std::string with_single_host(const std::string& url, const std::string& host) {
  const std::size_t at = url.find('@');
  const std::size_t path = url.find('/', at);
  const std::size_t query = url.find('?', path);
  if (at == std::string::npos || path == std::string::npos) throw std::runtime_error("not a postgresql:// URL with a login");
  return url.substr(0, at + 1) + host + url.substr(path, query == std::string::npos ? std::string::npos : query - path);
}

}  // namespace

ha_cluster::ha_cluster(std::filesystem::path source_dir)
    : script_(source_dir / "scripts" / "pg-ha"), parent_(make_parent()) {
  url_ = trimmed(run_pg_ha({"start"}, pg_command_timeout_ms));
}

ha_cluster::~ha_cluster() {
  if (keep_) return;
  try {
    run_pg_ha({"destroy"}, pg_command_timeout_ms);
  } catch (const std::exception&) {
    // Nothing more to do: the directory is removed below whatever the servers did.
  }
  std::error_code ignored;
  std::filesystem::remove_all(parent_, ignored);
}

std::string ha_cluster::failover(bool kill) {
  return trimmed(run_pg_ha(kill ? std::vector<std::string>{"failover", "--kill"} : std::vector<std::string>{"failover"},
                           failover_timeout_ms));
}

std::string ha_cluster::stop_now() const {
  try {
    run_pg_ha({"stop"}, pg_command_timeout_ms);
    return "PostgreSQL formation stopped; its data and logs are in " + (parent_ / "pg-ha").string();
  } catch (const std::exception& error) {
    return std::string("stopping the PostgreSQL formation failed: ") + error.what();
  }
}

std::string ha_cluster::standby_only(const std::string& url) const {
  const std::size_t at = url_.find('@');
  const std::size_t path = url_.find('/', at);
  std::string hosts = url_.substr(at + 1, path - at - 1);
  hosts += ',';
  for (std::size_t start = 0, comma; (comma = hosts.find(',', start)) != std::string::npos; start = comma + 1) {
    const std::string host = hosts.substr(start, comma - start);
    pqxx::connection node(with_single_host(url_, host));
    pqxx::nontransaction tx(node);
    if (tx.exec1("SELECT pg_is_in_recovery()")[0].as<bool>()) return with_single_host(url, host);
  }
  throw std::runtime_error("no node is a standby now");
}

std::string ha_cluster::run_pg_ha(const std::vector<std::string>& args, int timeout_ms) const {
  std::map<std::string, std::string> env{{"BANKWORKER_PG_HA_DIR", (parent_ / "pg-ha").string()}};
  const char* path = std::getenv("PATH");
  env["PATH"] = path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  const auto result = test::run_process(script_.string(), args, env, timeout_ms);
  if (result.exit_code != 0) {
    throw std::runtime_error("scripts/pg-ha " + args.front() + " failed (" + std::to_string(result.exit_code) +
                             "): " + result.err);
  }
  return result.out;
}

}  // namespace bankworker::chaos
