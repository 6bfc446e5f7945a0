// A Plaid connection's status and its one spelling (connection_status.hpp).

#include "connectors/plaid/connection_status.hpp"

namespace bankworker::plaid {

std::string_view to_string(connection_status status) noexcept {
  switch (status) {
    case connection_status::linking: return "linking";
    case connection_status::active: return "active";
    case connection_status::needs_reauth: return "needs_reauth";
    case connection_status::broken: return "broken";
    case connection_status::revoking: return "revoking";
    case connection_status::revoked: return "revoked";
  }
  return "unknown";
}

std::optional<connection_status> parse_connection_status(std::string_view text) noexcept {
  for (const connection_status status : connection_statuses) {
    if (to_string(status) == text) return status;
  }
  return std::nullopt;
}

}  // namespace bankworker::plaid
