// classify_error on Plaid's error objects as its docs print them (pure: no network).

#include <catch2/catch.hpp>

#include <string>

#include "connectors/plaid/errors.hpp"

namespace {

namespace plaid = bankworker::plaid;
using plaid::error_class;

std::string plaid_error(std::string_view type, std::string_view code, std::string_view message) {
  return R"({"display_message":null,"documentation_url":"https://plaid.com/docs/errors/","error_code":")" +
         std::string(code) + R"(","error_code_reason":null,"error_message":")" + std::string(message) +
         R"(","error_type":")" + std::string(type) + R"(","request_id":"HNTDNrA8F1shFEW","suggested_action":null})";
}

error_class class_of(long status, std::string_view type, std::string_view code, std::string_view message = "x") {
  return plaid::classify_error(status, plaid_error(type, code, message)).kind;
}

}  // namespace

TEST_CASE("Plaid's documented error objects are classified as the queue needs them", "[plaid_errors]") {
  CHECK(class_of(429, "RATE_LIMIT_EXCEEDED", "TRANSACTIONS_SYNC_LIMIT") == error_class::rate_limited);
  CHECK(class_of(429, "RATE_LIMIT_EXCEEDED", "ACCOUNTS_LIMIT") == error_class::rate_limited);
  CHECK(class_of(500, "API_ERROR", "INTERNAL_SERVER_ERROR") == error_class::transient);
  CHECK(class_of(503, "API_ERROR", "PLANNED_MAINTENANCE") == error_class::transient);
  CHECK(class_of(400, "INSTITUTION_ERROR", "INSTITUTION_DOWN") == error_class::institution_down);
  CHECK(class_of(400, "INSTITUTION_ERROR", "INSTITUTION_NOT_RESPONDING") == error_class::institution_down);
  CHECK(class_of(400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED") == error_class::needs_reauth);
  CHECK(class_of(400, "ITEM_ERROR", "ITEM_LOCKED") == error_class::needs_reauth);
  CHECK(class_of(400, "ITEM_ERROR", "INVALID_CREDENTIALS") == error_class::needs_reauth);
  CHECK(class_of(400, "ITEM_ERROR", "PASSWORD_RESET_REQUIRED") == error_class::needs_reauth);
  CHECK(class_of(400, "ITEM_ERROR", "ITEM_NOT_FOUND") == error_class::item_gone);
  CHECK(class_of(400, "ITEM_ERROR", "USER_PERMISSION_REVOKED") == error_class::item_gone);
  CHECK(class_of(400, "ITEM_ERROR", "PRODUCT_NOT_READY") == error_class::transient);
  CHECK(class_of(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN") == error_class::invalid_access_token);
  CHECK(class_of(400, "INVALID_INPUT", "INVALID_API_KEYS") == error_class::invalid_api_keys);
  CHECK(class_of(400, "INVALID_INPUT", "UNAUTHORIZED_ENVIRONMENT") == error_class::invalid_api_keys);
  CHECK(class_of(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN") == error_class::invalid_public_token);
  CHECK(class_of(400, "TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION") ==
        error_class::mutation_during_pagination);
  CHECK(class_of(400, "INVALID_REQUEST", "INVALID_FIELD", "cursor not associated with access_token") ==
        error_class::cursor_not_associated);
  CHECK(class_of(400, "INVALID_REQUEST", "INVALID_FIELD", "cursor is malformed") == error_class::invalid_request);
  CHECK(class_of(400, "INVALID_REQUEST", "MISSING_FIELDS") == error_class::invalid_request);
}

TEST_CASE("bodies that are not Plaid's error object are classified by status", "[plaid_errors]") {
  CHECK(plaid::classify_error(502, "<html>Bad Gateway</html>").kind == error_class::transient);
  CHECK(plaid::classify_error(429, "").kind == error_class::rate_limited);
  CHECK(plaid::classify_error(404, "not found").kind == error_class::invalid_request);
  CHECK(plaid::classify_error(200, "{").kind == error_class::response_invalid);
  const plaid::error unknown = plaid::classify_error(418, R"({"teapot":true})");
  CHECK(unknown.kind == error_class::invalid_request);
  CHECK(unknown.error_code.empty());
  CHECK(unknown.message == "HTTP 418 without Plaid's error object");
}

TEST_CASE("the error's fields are kept and its message never holds a token", "[plaid_errors]") {
  const std::string token = "access-sandbox-8ab976e6-64bc-4b38-98f7-731e7a349970";
  const plaid::error e = plaid::classify_error(
      400, plaid_error("INVALID_INPUT", "INVALID_ACCESS_TOKEN", "provided access token " + token + " is invalid"));
  CHECK(e.http_status == 400);
  CHECK(e.error_type == "INVALID_INPUT");
  CHECK(e.error_code == "INVALID_ACCESS_TOKEN");
  CHECK(e.request_id == "HNTDNrA8F1shFEW");
  CHECK(e.message.find(token) == std::string::npos);
  CHECK(e.message.find("access-sandbox-[REDACTED]") != std::string::npos);
  const std::string long_message(5'000, 'm');
  CHECK(plaid::classify_error(400, plaid_error("INVALID_REQUEST", "INVALID_FIELD", long_message)).message.size() <= 512);
}

TEST_CASE("every error class has a name", "[plaid_errors]") {
  CHECK(plaid::to_string(error_class::rate_limited) == "rate_limited");
  CHECK(plaid::to_string(error_class::refused) == "refused");
  CHECK(plaid::to_string(error_class::cursor_not_associated) == "cursor_not_associated");
}
