// Which server notices say a commit was acknowledged without the synchronous standby
// (db/replication_watch.hpp), in PostgreSQL 15's own words as libpq hands them over.
#include <catch2/catch.hpp>

#include "db/replication_watch.hpp"

using bankworker::db::says_replication_wait_cancelled;

TEST_CASE("a cancelled wait for the synchronous standby is recognised in both of PostgreSQL's wordings", "[db][failover]") {
  CHECK(says_replication_wait_cancelled(
      "WARNING:  canceling wait for synchronous replication due to user request\n"
      "DETAIL:  The transaction has already committed locally, but might not have been replicated to the standby.\n"));
  CHECK(says_replication_wait_cancelled(
      "WARNING:  canceling the wait for synchronous replication and terminating connection due to administrator "
      "command\nDETAIL:  The transaction has already committed locally, but might not have been replicated to the "
      "standby.\n"));
}

TEST_CASE("other notices are not taken for a cancelled replication wait", "[db][failover]") {
  CHECK_FALSE(says_replication_wait_cancelled("NOTICE:  relation \"plaid_stage\" already exists, skipping\n"));
  CHECK_FALSE(says_replication_wait_cancelled("WARNING:  there is no transaction in progress\n"));
  CHECK_FALSE(says_replication_wait_cancelled("NOTICE:  wait for synchronous replication\n"));
  CHECK_FALSE(says_replication_wait_cancelled(""));
}
