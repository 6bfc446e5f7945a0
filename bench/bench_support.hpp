#pragma once
// What several benchmarks share: timing, and a throwaway database next to the one they were given.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include <pqxx/pqxx>

namespace bankworker::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// postgresql://user:pw@host:port/db?x → same URL with another database.
inline std::string with_database(const std::string& url, const std::string& database) {
  const std::size_t scheme = url.find("://");
  const std::size_t slash = scheme == std::string::npos ? std::string::npos : url.find('/', scheme + 3);
  if (slash == std::string::npos) return url + " dbname=" + database;
  const std::size_t query = url.find('?', slash);
  return url.substr(0, slash + 1) + database + (query == std::string::npos ? "" : url.substr(query));
}

// BANKWORKER_DATABASE_URL, the cluster the bench works on; exits 2 with a hint when it is unset.
inline std::string cluster_url(const char* bench_name) {
  const char* url = std::getenv("BANKWORKER_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "%s: set BANKWORKER_DATABASE_URL (make bench sets it to the private cluster)\n", bench_name);
    std::exit(2);
  }
  return url;
}

// A database of the bench's own on that cluster (prefix and process id), made at construction and
// dropped (closing whatever is still connected) at destruction: a bench never touches the
// database it was pointed at.
class scratch_database {
 public:
  scratch_database(std::string cluster_url, const std::string& prefix)
      : cluster_url_(std::move(cluster_url)), name_(prefix + "_" + std::to_string(::getpid())) {
    pqxx::connection admin(cluster_url_);
    pqxx::nontransaction(admin).exec("CREATE DATABASE " + admin.quote_name(name_));
    url_ = with_database(cluster_url_, name_);
  }
  scratch_database(const scratch_database&) = delete;
  scratch_database& operator=(const scratch_database&) = delete;
  ~scratch_database() {
    try {
      pqxx::connection admin(cluster_url_);
      pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + admin.quote_name(name_) + " WITH (FORCE)");
    } catch (const std::exception& error) {
      std::fprintf(stderr, "could not drop the bench database %s: %s\n", name_.c_str(), error.what());
    }
  }
  const std::string& name() const noexcept { return name_; }
  const std::string& url() const noexcept { return url_; }

 private:
  std::string cluster_url_;
  std::string name_;
  std::string url_;
};

// The first column of the first row of `sql` (a count), outside any transaction.
inline long count_of(pqxx::connection& connection, const std::string& sql) {
  pqxx::nontransaction tx(connection);
  return tx.exec1(sql)[0].as<long>();
}

}  // namespace bankworker::bench
