// Recognising a cancelled wait for the synchronous standby (replication_watch.hpp says why).
#include "db/replication_watch.hpp"

namespace bankworker::db {

bool says_replication_wait_cancelled(std::string_view notice) noexcept {
  // PostgreSQL 15 syncrep.c words it "canceling wait for synchronous replication due to user
  // request" (a cancel: statement_timeout) or "canceling the wait for synchronous replication and
  // terminating connection due to administrator command" (shutdown). Both are WARNINGs.
  return notice.starts_with("WARNING") && notice.find("wait for synchronous replication") != std::string_view::npos;
}

bool replication_watch::operator()(const char message[]) noexcept {
  if (message != nullptr && says_replication_wait_cancelled(message)) ++cancelled_waits_;
  return true;
}

}  // namespace bankworker::db
