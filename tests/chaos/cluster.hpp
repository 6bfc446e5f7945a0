#pragma once
// A PostgreSQL cluster of the chaos run's own, made by scripts/pg in a temporary directory
// (BANKWORKER_PG_DIR): restarting it disturbs no other test, unlike the shared private cluster.
// Its port stays the same across restarts, so the workers' URL keeps working once it is back.

#include <filesystem>
#include <string>
#include <vector>

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

// The failover run's highly available PostgreSQL, made by scripts/pg-ha in a temporary directory
// (BANKWORKER_PG_HA_DIR): a pg_auto_failover monitor, a primary and a synchronous standby.
class ha_cluster {
 public:
  // Creates and starts the formation; throws when scripts/pg-ha fails (its output in the message).
  explicit ha_cluster(std::filesystem::path source_dir);
  ha_cluster(const ha_cluster&) = delete;
  ha_cluster& operator=(const ha_cluster&) = delete;
  // Stops every node and the monitor and deletes their data.
  ~ha_cluster();

  // postgresql://bankworker_admin:…@127.0.0.1:P1,127.0.0.1:P2/bankworker?target_session_attrs=read-write
  const std::string& url() const { return url_; }
  // `url` naming only the node that is a standby now (single host, no target_session_attrs).
  std::string standby_only(const std::string& url) const;
  // A planned switchover, or (kill) SIGKILL of the primary's pg_autoctl and postmaster; returns
  // scripts/pg-ha's line ("node1 -> node2 in 3.8 s") once the formation is primary + secondary
  // again. Throws when it is not.
  std::string failover(bool kill);
  // `scripts/pg-ha stop` (data and logs stay), bounded; safe from another thread (it only runs the
  // script). Says what it did. For the run's watchdog.
  std::string stop_now() const;
  // Leaves the formation running at destruction (--keep), and says where it is.
  std::string keep() {
    keep_ = true;
    return "BANKWORKER_PG_HA_DIR=" + (parent_ / "pg-ha").string();
  }

 private:
  std::string run_pg_ha(const std::vector<std::string>& args, int timeout_ms) const;

  bool keep_ = false;
  std::filesystem::path script_;
  std::filesystem::path parent_;  // the cluster lives in parent_/pg-ha
  std::string url_;
};

}  // namespace bankworker::chaos
