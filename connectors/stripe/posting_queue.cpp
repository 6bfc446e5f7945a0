#include "connectors/stripe/posting_queue.hpp"

#include "connectors/stripe/inbox.hpp"
#include "connectors/stripe/settlement_marks.hpp"
#include "core/assert.hpp"
#include "db/sql_array.hpp"
#include "db/statement.hpp"

namespace bankworker::stripe {

namespace {

constexpr db::statement ready_tenants_sql{"stripe_ready_tenants",
    "SELECT t::text FROM bankworker.stripe_ready_tenants($1::uuid, $2) AS t"};
// A 64-bit key per tenant, in a namespace of its own ("stripe.post:" …) so that it cannot meet the
// Connect account locks (migration 0010), which hash other text.
// One key per tenant and posting lane (migration 0046).
constexpr db::statement lock_lane_sql{"stripe_lock_posting_lane",
    "SELECT pg_try_advisory_xact_lock(hashtextextended('stripe.post:' || current_setting('bankworker.tenant_id')"
    " || '/' || $1::int, 0))"};
constexpr db::statement claim_sql{"stripe_claim_waiting",
    "SELECT event_id, body, attempts FROM bankworker.stripe_events"
    " WHERE state = 'received' AND posting_lane = $2 AND (available_at IS NULL OR available_at <= now())"
    " ORDER BY received_at, event_id LIMIT $1 FOR UPDATE SKIP LOCKED"};
constexpr db::statement claim_one_sql{"stripe_claim_waiting_one",
    "SELECT event_id, body, attempts FROM bankworker.stripe_events"
    " WHERE event_id = $1 AND state = 'received' FOR UPDATE SKIP LOCKED"};
constexpr db::statement record_failures_sql{"stripe_record_posting_failures",
    "UPDATE bankworker.stripe_events s SET attempts = s.attempts + 1, last_error = left(f.error, 2000),"
    " state = CASE WHEN f.final OR s.attempts + 1 >= $4 THEN 'failed' ELSE 'received' END,"
    " available_at = now() + least(interval '1 hour', interval '10 seconds' * power(2, least(s.attempts, 20)))"
    " FROM unnest($1::text[], $2::text[], $3::boolean[]) AS f(event_id, error, final)"
    " WHERE s.event_id = f.event_id RETURNING s.state"};
constexpr db::statement list_events_sql{"stripe_list_events",
    "SELECT event_id, type, state, attempts, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " to_char(available_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), last_error,"
    " to_char(settlement_awaited_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " array_to_string(settlement_awaited, ',')"
    " FROM bankworker.stripe_events"
    " WHERE CASE $1 WHEN 'failed' THEN state = 'failed' WHEN 'unposted' THEN state IN ('received', 'fetching')"
    " WHEN 'awaiting' THEN settlement_awaited_since IS NOT NULL ELSE true END"
    " ORDER BY received_at DESC, event_id DESC LIMIT $2"};
constexpr db::statement retry_failed_sql{"stripe_retry_failed_event",
    "UPDATE bankworker.stripe_events SET state = 'received', attempts = 0, available_at = NULL"
    " WHERE event_id = $1 AND state = 'failed'"};

waiting_event waiting_of(const pqxx::row& row) {
  return {row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::int32_t>()};
}

}  // namespace

std::vector<core::uuid> ready_tenants(pqxx::transaction_base& tx, const std::optional<core::uuid>& after,
                                      std::uint32_t limit) {
  std::optional<std::string> after_text;
  if (after) after_text = after->to_string();
  std::vector<core::uuid> tenants;
  for (const auto& row : db::exec_statement(tx, ready_tenants_sql, after_text, static_cast<long>(limit))) {
    // The column is a uuid of the database's own: a value that does not parse is a broken row.
    tenants.push_back(core::uuid::parse(row[0].as<std::string>()).value());
  }
  return tenants;
}

bool try_lock_posting_lane(pqxx::work& tx, std::uint8_t lane) {
  BW_ASSERT(lane < posting_lanes);
  return db::exec_statement1(tx, lock_lane_sql, static_cast<int>(lane))[0].as<bool>();
}

std::vector<waiting_event> claim_waiting_events(pqxx::work& tx, std::uint8_t lane, std::uint32_t limit) {
  std::vector<waiting_event> events;
  const pqxx::result rows = db::exec_replanned(tx, claim_sql, static_cast<long>(limit), static_cast<int>(lane));
  events.reserve(rows.size());
  for (const auto& row : rows) events.push_back(waiting_of(row));
  return events;
}

std::optional<waiting_event> claim_waiting_event(pqxx::work& tx, std::string_view event_id) {
  const pqxx::result rows = db::exec_statement(tx, claim_one_sql, std::string(event_id));
  if (rows.empty()) return std::nullopt;
  return waiting_of(rows[0]);
}

std::size_t record_posting_failures(pqxx::work& tx, std::span<const posting_failure> failures) {
  if (failures.empty()) return 0;
  db::array_text ids, errors, finals;
  for (const posting_failure& failure : failures) {
    ids.add(failure.event_id);
    errors.add(failure.error);
    finals.add(failure.final ? "true" : "false");
  }
  std::size_t dead = 0;
  for (const auto& row :
       db::exec_statement(tx, record_failures_sql, ids.finish(), errors.finish(), finals.finish(), posting_attempts_max)) {
    if (row[0].as<std::string>() == "failed") ++dead;
  }
  return dead;
}

std::vector<event_summary> list_events(pqxx::transaction_base& tx, event_filter filter, std::uint32_t limit) {
  const char* which = filter == event_filter::failed                ? "failed"
                      : filter == event_filter::unposted            ? "unposted"
                      : filter == event_filter::awaiting_settlement ? "awaiting"
                                                                    : "all";
  std::vector<event_summary> events;
  for (const auto& row : db::exec_statement(tx, list_events_sql, std::string(which), static_cast<long>(limit))) {
    event_summary event;
    event.event_id = row[0].as<std::string>();
    event.type = row[1].as<std::string>();
    event.state = row[2].as<std::string>();
    event.attempts = row[3].as<std::int32_t>();
    event.received_at = row[4].as<std::string>();
    if (!row[5].is_null()) event.available_at = row[5].as<std::string>();
    if (!row[6].is_null()) event.last_error = row[6].as<std::string>();
    if (!row[7].is_null()) event.settlement_awaited_since = row[7].as<std::string>();
    if (!row[8].is_null()) event.settlement_awaited = split_leg_keys(row[8].as<std::string>());
    events.push_back(std::move(event));
  }
  return events;
}

bool retry_failed_event(pqxx::work& tx, std::string_view event_id) {
  return db::exec_statement(tx, retry_failed_sql, std::string(event_id)).affected_rows() == 1;
}

}  // namespace bankworker::stripe
