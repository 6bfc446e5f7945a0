#include "tests/support/http_client.hpp"

#include <curl/curl.h>

namespace bankworker::test {

namespace {

constexpr long request_timeout_ms = 60'000;

std::size_t collect(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

http_result perform(const std::string& url, const std::string* body, const std::vector<std::string>& headers) {
  http_result result;
  CURL* curl = curl_easy_init();
  curl_slist* list = nullptr;
  for (const auto& header : headers) list = curl_slist_append(list, header.c_str());
  if (body != nullptr) {
    list = curl_slist_append(list, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, request_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return result;
}

}  // namespace

http_result http_get(const std::string& url, const std::vector<std::string>& headers) {
  return perform(url, nullptr, headers);
}

http_result http_post(const std::string& url, const std::string& body, const std::vector<std::string>& headers) {
  return perform(url, &body, headers);
}

}  // namespace bankworker::test
