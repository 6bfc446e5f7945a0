// Classification of failover symptoms (connection_problem.hpp says which and why).
#include "db/connection_problem.hpp"

#include <string_view>

#include <pqxx/nontransaction>

namespace bankworker::db {

namespace {

constexpr std::size_t summary_bytes_max = 200;

bool is_problem_state(std::string_view state) noexcept {
  return state.starts_with("08") || state == "25006" || state == "57P01" || state == "57P02" || state == "57P03";
}

// libpq's own texts when target_session_attrs=read-write turned every server down (PostgreSQL 14+
// "session is read-only"; older "could not make a writable connection") or a server refused as in
// hot standby.
bool says_no_primary(std::string_view text) noexcept {
  return text.find("session is read-only") != std::string_view::npos ||
         text.find("could not make a writable connection") != std::string_view::npos ||
         text.find("server is in hot standby mode") != std::string_view::npos;
}

template <class Test>
bool any_nested(const std::exception& error, Test test) noexcept {
  if (test(error)) return true;
  try {
    std::rethrow_if_nested(error);
  } catch (const std::exception& inner) {
    return any_nested(inner, test);
  } catch (...) {
    return false;
  }
  return false;
}

}  // namespace

bool is_connection_problem(const std::exception& error) noexcept {
  return any_nested(error, [](const std::exception& e) {
    if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) return false;
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) return true;
    if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return is_problem_state(sql->sqlstate());
    return false;
  });
}

bool is_no_primary(const std::exception& error) noexcept {
  return any_nested(error, [](const std::exception& e) {
    if (dynamic_cast<const standby_error*>(&e) != nullptr) return true;
    return dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr && says_no_primary(e.what());
  });
}

void require_primary(pqxx::connection_base& connection) {
  pqxx::nontransaction check(connection, "bankworker_require_primary");
  const pqxx::row row = check.exec1(
      "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('default_transaction_read_only')::boolean");
  check.commit();
  if (row[0].as<bool>() || row[1].as<bool>()) throw_not_primary(connection, row[0].as<bool>());
}

void throw_not_primary(pqxx::connection_base& connection, bool in_recovery) {
  // "session is read-only" is libpq's own phrase for it, which is_no_primary() recognises.
  throw standby_error(std::string("the server at ") + (connection.hostname() ? connection.hostname() : "?") + ":" +
                      (connection.port() ? connection.port() : "?") +
                      (in_recovery ? " is a standby (in recovery)" : " is read-only") + ": session is read-only");
}

std::string problem_summary(const std::exception& error) {
  std::string text;
  for (const char* c = error.what(); *c != '\0' && text.size() < summary_bytes_max; ++c) {
    const bool space = *c == '\n' || *c == '\r' || *c == '\t';
    if (space && (text.empty() || text.back() == ' ')) continue;
    text.push_back(space ? ' ' : *c);
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

std::string server_message(std::string_view what) {
  constexpr std::string_view prefix = "ERROR:  ";
  if (what.starts_with(prefix)) what.remove_prefix(prefix.size());
  return std::string(what.substr(0, what.find('\n')));
}

}  // namespace bankworker::db
