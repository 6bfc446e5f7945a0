#pragma once
// A throwaway database in the private test cluster, created for one test and dropped after it.
//
// The cluster is the one scripts/pg starts: its admin URL comes from BANKWORKER_TEST_DATABASE_URL
// (set by `make test`). Tests never touch any other database: without that variable every [pg]
// test fails with a message saying how to run it.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>

#include "crypto/secret.hpp"
#include "db/pool.hpp"

namespace bankworker::test {

// The admin URL of the private cluster; fails the test when it is not set.
std::string admin_url();

// `url` with its database replaced by `database` (URI or key=value form).
std::string url_with_database(const std::string& url, const std::string& database);

class scratch_database {
 public:
  // Creates an empty database; with `migrated`, applies every embedded migration to it.
  explicit scratch_database(bool migrated = true);
  scratch_database(const scratch_database&) = delete;
  scratch_database& operator=(const scratch_database&) = delete;
  ~scratch_database();

  const std::string& name() const { return name_; }
  // URL of this database as the cluster's admin (a superuser: bypasses RLS, for fixtures).
  const std::string& url() const { return url_; }
  std::unique_ptr<pqxx::connection> connect_as_admin() const;
  // URL of this database as a login of its own that is a member of bankworker_worker only: what
  // `bankworker run` and every command but `migrate` accept (README: roles). Created at first
  // use (not from several threads at once), dropped with the database.
  const std::string& runtime_url() const;
  // The same for a login that is a member of bankworker_app only: the customer's app.
  const std::string& app_url() const;
  // A pool of connections as bankworker_worker (or another role), like the worker's own.
  std::unique_ptr<db::pool> worker_pool(db::pool_settings settings = {}) const;
  // The same with `connections` connections and default settings otherwise.
  std::unique_ptr<db::pool> worker_pool(std::size_t connections) const;

 private:
  const std::string& login_url(std::string& cached, std::string_view suffix, std::string_view role) const;

  std::string name_;
  std::string url_;
  // Created on first use by the const accessors above.
  mutable std::string runtime_url_;
  mutable std::string app_url_;
  mutable std::vector<std::string> logins_;
};

}  // namespace bankworker::test
