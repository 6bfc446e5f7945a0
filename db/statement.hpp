#pragma once
// Named SQL statements, prepared once per connection (STYLE §9).
//
// A statement sent with exec_params is parsed, analysed and planned on every call. On the hot
// paths that is most of what a short statement costs: under sync_bench (pg_stat_statements with
// track_planning, one sync at a time) planning took about 1.7 ms of every sync's database time,
// 0.26 ms of it for the connection lookup alone, against 0.07 ms to execute it. A prepared
// statement is parsed once per connection, and after five executions PostgreSQL keeps a generic
// plan when it costs no more than the custom ones.

#include <utility>

#include <pqxx/pqxx>

namespace bankworker::db {

// A statement's name on the connection (unique in the program) and its text. Both are constants.
struct statement {
  const char* name;
  const char* sql;
};

// Runs `s` as a prepared statement of tx's connection, defining it there on first use. Defining
// it again with the same text is a lookup in libpqxx's table of the connection's statements
// (another text under the same name throws pqxx::argument_error: two statements share a name);
// the server sees the PREPARE once per connection, with the first execution.
template <typename... Args>
pqxx::result exec_statement(pqxx::transaction_base& tx, const statement& s, Args&&... args) {
  tx.conn().prepare(s.name, s.sql);
  return tx.exec_prepared(s.name, std::forward<Args>(args)...);
}

// The same for a statement that returns exactly one row (as exec_prepared1: any other count
// throws pqxx::unexpected_rows).
template <typename... Args>
pqxx::row exec_statement1(pqxx::transaction_base& tx, const statement& s, Args&&... args) {
  tx.conn().prepare(s.name, s.sql);
  return tx.exec_prepared1(s.name, std::forward<Args>(args)...);
}

// Runs `s` unprepared: parsed and planned for these arguments on every call. For a statement that
// runs once per batch (so planning is a small part of it) over a table that grows: a prepared
// statement's generic plan, made while the table was small, is kept until the table's next
// ANALYZE. Under webhook_load (a fresh database, 10 s, no autoanalyze yet) the posters' lookup of
// existing journal entries kept a plan that filtered the tenant's whole journal for the batch's
// keys: 61 ms per batch and growing, where the index lookup it gets planned afresh takes 0.1 ms.
template <typename... Args>
pqxx::result exec_replanned(pqxx::transaction_base& tx, const statement& s, Args&&... args) {
  return tx.exec_params(s.sql, std::forward<Args>(args)...);
}

}  // namespace bankworker::db
