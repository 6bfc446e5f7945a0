#pragma once
// Which database errors mean "the connection, or the server behind it, cannot take our writes
// right now" rather than "this statement or this job is wrong" (issue #18). A failover shows
// itself in all of these ways, and every one of them is a connection problem, never a job's
// failure: the pool drops such a connection and the multi-host URL (target_session_attrs=
// read-write) finds the new primary on the next connect.
//
//   - the connection broke or could not be made (reset, refused, closed): pqxx::broken_connection
//   - SQLSTATE class 08 (connection exception)
//   - 25006 read_only_sql_transaction: the server is a standby now, or a primary being demoted
//   - 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now: the server is
//     stopping, crashed, or starting (or promoting) and not yet accepting connections
//   - standby_error below: a server that answers but is in recovery
//
// pqxx::in_doubt_error is not one of them: the commit may have landed, which only the effect's
// idempotency key can tell (STYLE.md §3); callers keep classifying it first.

#include <exception>
#include <string>
#include <string_view>

#include <pqxx/connection>
#include <pqxx/except>

namespace bankworker::db {

// The server answered but is a standby (in recovery) or read-only, so it cannot take writes. A
// broken_connection, so that everything that already handles a lost connection handles it too.
class standby_error : public pqxx::broken_connection {
 public:
  using pqxx::broken_connection::broken_connection;
};

// True for every failover symptom listed above, looking through std::nested_exception too.
bool is_connection_problem(const std::exception& error) noexcept;

// True when libpq refused every server the URL names because none accepts writes
// (target_session_attrs=read-write found only standbys), or for a standby_error: the URL names
// no primary right now. During a failover this is brief; at start-up, for long, it is the
// operator's configuration.
bool is_no_primary(const std::exception& error) noexcept;

// The first line of a server error's text without its "ERROR:  " prefix: what the statement (or a
// function's RAISE) said, without the CONTEXT lines that follow.
std::string server_message(std::string_view what);

// Throws standby_error when `connection`'s server is in recovery or read-only by default.
void require_primary(pqxx::connection_base& connection);
// Throws standby_error naming `connection`'s server, a standby (in_recovery) or read-only.
[[noreturn]] void throw_not_primary(pqxx::connection_base& connection, bool in_recovery);

// One line, at most 200 bytes, of an error's text, for logs and /readyz (libpq's are multi-line).
std::string problem_summary(const std::exception& error);

}  // namespace bankworker::db
