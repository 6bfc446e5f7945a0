#include "db/login.hpp"

#include <pqxx/pqxx>

namespace bankworker::db {

namespace {

// session_user, not current_user: the pool's SET ROLE bankworker_worker changes only the latter,
// and the power that matters is the login's own (it can always RESET ROLE). The CASEs ask about a
// bankworker role only once it exists (before the first migration it does not).
constexpr const char* login_privileges_sql =
    "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls,"
    " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles o WHERE o.rolname = 'bankworker_owner')"
    "      THEN pg_catalog.pg_has_role(r.oid, 'bankworker_owner', 'MEMBER') ELSE false END,"
    " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles a WHERE a.rolname = 'bankworker_app')"
    "      THEN pg_catalog.pg_has_role(r.oid, 'bankworker_app', 'MEMBER') ELSE false END,"
    " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles w WHERE w.rolname = 'bankworker_worker')"
    "      THEN pg_catalog.pg_has_role(r.oid, 'bankworker_worker', 'MEMBER') ELSE true END"
    " FROM pg_catalog.pg_roles r WHERE r.rolname = session_user";

}  // namespace

std::optional<std::string> runtime_login_problem(pqxx::connection& connection) {
  pqxx::nontransaction tx(connection, "bankworker_login_check");
  const pqxx::row row = tx.exec1(login_privileges_sql);
  const std::string login = row[0].as<std::string>();
  const auto refused = [&](const std::string& power) {
    return "login '" + login + "' " + power +
           "; the runtime needs a login that is a member of bankworker_worker only (README: roles)";
  };
  // A superuser is a member of every role, so it is named before the memberships.
  if (row[1].as<bool>()) return refused("is a superuser");
  if (row[2].as<bool>()) return refused("has CREATEROLE");
  if (row[3].as<bool>()) return refused("has BYPASSRLS");
  if (row[4].as<bool>()) return refused("is a member of bankworker_owner (schema owner: use it for migrate only)");
  if (row[5].as<bool>()) return refused("is a member of bankworker_app (the customer app's role)");
  // Before the first migration the role does not exist yet, and the command's own "not migrated"
  // message is the better one.
  if (!row[6].as<bool>()) return refused("is not a member of bankworker_worker");
  return std::nullopt;
}

}  // namespace bankworker::db
