#pragma once
// Plain HTTP calls from tests (libcurl's easy API on the test's own thread).

#include <string>
#include <vector>

namespace bankworker::test {

struct http_result {
  long status = 0;  // 0 when the request failed below HTTP
  std::string body;
};

http_result http_get(const std::string& url, const std::vector<std::string>& headers = {});
http_result http_post(const std::string& url, const std::string& body, const std::vector<std::string>& headers = {});

}  // namespace bankworker::test
