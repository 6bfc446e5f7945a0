#include "db/connect.hpp"

#include <algorithm>

namespace bankworker::db {

void add_connect_timeout(std::string& url, std::chrono::milliseconds timeout) {
  if (url.find("connect_timeout") != std::string::npos) return;
  const long long seconds = std::max<long long>(1, (timeout.count() + 999) / 1000);
  const std::string value = std::to_string(seconds);
  if (url.find("://") == std::string::npos) {
    url += " connect_timeout=" + value;
    return;
  }
  // A URI: a query parameter. libpq's URIs have no fragment, so the query runs to the end.
  url += (url.find('?') == std::string::npos ? "?" : "&");
  url += "connect_timeout=" + value;
}

namespace {

constexpr const char* operator_session_sql =
    "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false),"
    " set_config('idle_in_transaction_session_timeout', $3, false),"
    " set_config('application_name', 'bankworker-cli', false)";

}  // namespace

void configure_operator_session(pqxx::connection& connection, std::chrono::milliseconds statement_timeout,
                                std::chrono::milliseconds lock_timeout,
                                std::chrono::milliseconds idle_in_transaction_timeout) {
  pqxx::nontransaction setup(connection, "bankworker_operator_session");
  setup.exec_params(operator_session_sql, std::to_string(statement_timeout.count()),
                    std::to_string(lock_timeout.count()), std::to_string(idle_in_transaction_timeout.count()));
}

void ping(pqxx::connection& connection) { pqxx::nontransaction(connection, "bankworker_ping").exec("SELECT 1"); }

}  // namespace bankworker::db
