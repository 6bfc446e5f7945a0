#pragma once
// What several benchmarks share: timing, and a throwaway database next to the one they were given.

#include <chrono>
#include <string>

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

}  // namespace bankworker::bench
