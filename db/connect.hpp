#pragma once
// The connect timeout every direct libpq connection carries. libpqxx 6.4 takes one connection
// string, so the timeout is added to the operator's text rather than passed as a keyword: as
// `connect_timeout=N` after a key=value string, or as a query parameter of a URI. A string that
// already names connect_timeout keeps the operator's value. Also the session settings of an
// operator's direct connection, and the cheapest round trip that proves a server answers.

#include <chrono>
#include <string>

#include <pqxx/pqxx>

namespace bankworker::db {

// Adds `connect_timeout` (whole seconds, rounded up, at least 1) to a libpq URI or key=value
// string that does not set one. libpq applies it to each host it tries, through the whole start-up
// exchange (TCP, TLS, authentication), so a server that accepts and never answers fails within it.
void add_connect_timeout(std::string& url, std::chrono::milliseconds timeout);

// Deadlines for an operator command's own connection, longer than the runtime's (a migration may
// rewrite a large table, but must not wait forever behind a lock or idle in a transaction), and
// its application_name.
void configure_operator_session(pqxx::connection& connection, std::chrono::milliseconds statement_timeout,
                                std::chrono::milliseconds lock_timeout,
                                std::chrono::milliseconds idle_in_transaction_timeout);

// One empty round trip; throws when the server does not answer (the systemd watchdog's check).
void ping(pqxx::connection& connection);

}  // namespace bankworker::db
