#include "tests/support/scratch_database.hpp"

#include <sodium.h>
#include <unistd.h>

#include <cstdlib>

#include <catch2/catch.hpp>

#include <pqxx/pqxx>

#include "db/migrate.hpp"
#include "tests/support/logins.hpp"

namespace bankworker::test {

std::string admin_url() {
  const char* url = std::getenv("BANKWORKER_TEST_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    FAIL("BANKWORKER_TEST_DATABASE_URL is not set: [pg] tests run against the private cluster; "
         "use `make test`, or `export BANKWORKER_TEST_DATABASE_URL=$(scripts/pg start)`");
  }
  return url;
}

std::string url_with_database(const std::string& url, const std::string& database) {
  const std::size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url + " dbname=" + database;  // key=value: last one wins
  const std::size_t path = url.find('/', scheme + 3);
  const std::size_t query = url.find('?', scheme + 3);
  if (path == std::string::npos || (query != std::string::npos && path > query)) {
    const std::size_t insert_at = query == std::string::npos ? url.size() : query;
    return url.substr(0, insert_at) + "/" + database + url.substr(insert_at);
  }
  const std::size_t path_end = query == std::string::npos ? url.size() : query;
  return url.substr(0, path + 1) + database + url.substr(path_end);
}

scratch_database::scratch_database(bool migrated) {
  name_ = "bw_test_" + std::to_string(::getpid()) + "_" + std::to_string(randombytes_uniform(1'000'000'000));
  const std::string admin = admin_url();
  {
    pqxx::connection connection(admin);
    pqxx::nontransaction tx(connection);
    tx.exec("CREATE DATABASE " + tx.quote_name(name_));
  }
  url_ = url_with_database(admin, name_);
  if (migrated) {
    pqxx::connection connection(url_);
    db::apply_migrations(connection, db::embedded_migrations());
  }
}

scratch_database::~scratch_database() {
  try {
    pqxx::connection connection(admin_url());
    pqxx::nontransaction tx(connection);
    tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name_) + " WITH (FORCE)");
    for (const std::string& login : logins_) tx.exec("DROP ROLE IF EXISTS " + tx.quote_name(login));
  } catch (const std::exception& error) {
    WARN("could not drop scratch database " << name_ << ": " << error.what());
  }
}

const std::string& scratch_database::login_url(std::string& cached, std::string_view suffix,
                                              std::string_view role) const {
  if (!cached.empty()) return cached;
  const std::string login = name_ + std::string(suffix);
  cached = create_login(url_, url_, login, role);
  logins_.push_back(login);
  return cached;
}

const std::string& scratch_database::runtime_url() const { return login_url(runtime_url_, "_rt", "bankworker_worker"); }

const std::string& scratch_database::app_url() const { return login_url(app_url_, "_app", "bankworker_app"); }

std::unique_ptr<pqxx::connection> scratch_database::connect_as_admin() const {
  return std::make_unique<pqxx::connection>(url_);
}

std::unique_ptr<db::pool> scratch_database::worker_pool(db::pool_settings settings) const {
  return std::make_unique<db::pool>(crypto::secret::copy_of(url_), std::move(settings));
}

std::unique_ptr<db::pool> scratch_database::worker_pool(std::size_t connections) const {
  db::pool_settings settings;
  settings.connections = connections;
  return worker_pool(std::move(settings));
}

}  // namespace bankworker::test
