#pragma once
// What the login a command connects with may do (issue 23, DESIGN.md §4 "Roles"). The runtime
// login must hold no owner power: a worker session of a superuser, of a role with CREATEROLE or
// BYPASSRLS, or of a member of bankworker_owner could RESET ROLE and switch the journal's
// immutability triggers off, drop FORCE RLS on sealed secrets, or grant itself programs on the
// database host. Every command but `migrate` asks this first and refuses to start.

#include <optional>
#include <string>

#include <pqxx/connection>

namespace bankworker::db {

// Why the session's login may not be the runtime login, in one line naming the login and the
// power it holds; empty when it holds none of them. Throws pqxx errors when it cannot ask.
std::optional<std::string> runtime_login_problem(pqxx::connection& connection);

}  // namespace bankworker::db
