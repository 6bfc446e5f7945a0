#pragma once
// A PostgreSQL cluster of the chaos run's own, made by scripts/pg in a temporary directory
// (BANKWORKER_PG_DIR): restarting it disturbs no other test, unlike the shared private cluster.
// Its port stays the same across restarts, so the workers' URL keeps working once it is back.

#include <filesystem>
#include <string>

namespace bankworker::chaos {

class private_cluster {
 public:
  // Creates and starts the cluster; throws when scripts/pg fails (its output in the message).
  explicit private_cluster(std::filesystem::path source_dir);
  private_cluster(const private_cluster&) = delete;
  private_cluster& operator=(const private_cluster&) = delete;
  // Stops the server and deletes its data.
  ~private_cluster();

  // postgresql://bankworker_admin:…@127.0.0.1:PORT/bankworker — the cluster's superuser.
  const std::string& url() const { return url_; }
  // `pg_ctl stop -m fast` (every client is cut off) and start again; throws when the server
  // comes back on another port (the old one was taken meanwhile).
  void stop();
  void start();

 private:
  std::string run_pg(const std::string& command) const;

  std::filesystem::path script_;
  std::filesystem::path parent_;  // the temporary directory; the cluster lives in parent_/pg
  std::string url_;
};

}  // namespace bankworker::chaos
