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

}  // namespace bankworker::db
