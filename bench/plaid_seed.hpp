#pragma once
// What the Plaid sync benchmarks share (sync_bench, scale_bench): the simulator's items linked to
// connections as plaid.link leaves them (a connection row and its sealed access token; not timed),
// one plaid.sync enqueued per connection, and the wait until every connection has synced.

#include <chrono>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "db/keys.hpp"
#include "db/pool.hpp"

namespace bankworker::bench {

// A control call to the simulator from the main thread (set-up only; never on an io_context).
std::string sim_post(const std::string& url, const std::string& body);

struct linked_connection {
  core::uuid tenant;
  core::uuid connection;
};

// Makes `tenants` tenants and links every item plaid_sim at `sim_url` has to a connection of one
// of them, in turn. `keys` must hold the root key the workers that sync them use.
std::vector<linked_connection> link_sim_items(db::pool& connections, db::key_store& keys, const std::string& sim_url,
                                              std::size_t tenants);

// One plaid.sync per connection, through the worker's own request function (the app's
// request_sync demands a scope token, migration 0025).
void enqueue_syncs(db::pool& connections, const std::vector<linked_connection>& linked);

// Polls every 20 ms until `expected` connections have synced once; false when `limit` passed first.
bool wait_until_synced(pqxx::connection& admin, long expected, std::chrono::steady_clock::duration limit);

}  // namespace bankworker::bench
