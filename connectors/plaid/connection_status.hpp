#pragma once
// A Plaid connection's status (migration 0009's check constraint on bankworker.connections.status),
// as one type with one spelling: every comparison in the room is on the enum, and the text exists
// only where a row is read or written and where an operator types or reads it. Pure.

#include <array>
#include <optional>
#include <string_view>

namespace bankworker::plaid {

enum class connection_status { linking, active, needs_reauth, broken, revoking, revoked };

// Every status, in the order the gauges and `connections list --status` name them.
inline constexpr std::array<connection_status, 6> connection_statuses = {
    connection_status::linking,  connection_status::active,   connection_status::needs_reauth,
    connection_status::broken,   connection_status::revoking, connection_status::revoked};

std::string_view to_string(connection_status status) noexcept;
// The status a text names, or nothing for any other text.
std::optional<connection_status> parse_connection_status(std::string_view text) noexcept;

}  // namespace bankworker::plaid
