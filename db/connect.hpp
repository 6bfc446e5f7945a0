#pragma once
// The connect timeout every direct libpq connection carries. libpqxx 6.4 takes one connection
// string, so the timeout is added to the operator's text rather than passed as a keyword: as
// `connect_timeout=N` after a key=value string, or as a query parameter of a URI. A string that
// already names connect_timeout keeps the operator's value.

#include <chrono>
#include <string>

namespace bankworker::db {

// Adds `connect_timeout` (whole seconds, rounded up, at least 1) to a libpq URI or key=value
// string that does not set one. libpq applies it to each host it tries, through the whole start-up
// exchange (TCP, TLS, authentication), so a server that accepts and never answers fails within it.
void add_connect_timeout(std::string& url, std::chrono::milliseconds timeout);

}  // namespace bankworker::db
