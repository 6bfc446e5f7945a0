#pragma once
// Login roles for tests, made the way README's role recipe makes them: a login of its own that is
// a member of one bankworker role only (bankworker_worker for the runtime, bankworker_app for the
// customer's app), so tests run the worker exactly as a deployment must.

#include <string>
#include <string_view>

namespace bankworker::test {

// Creates `login` (LOGIN, a random password, member of `role` only) through `admin_url`, and
// returns `url` with its user and password replaced by the new login's. The URLs are URIs
// (postgresql://user:password@host:port/database), as scripts/pg prints them.
// `url` with its user and password replaced.
std::string url_as(const std::string& url, std::string_view login, std::string_view password);

std::string create_login(const std::string& admin_url, const std::string& url, std::string_view login,
                         std::string_view role);

}  // namespace bankworker::test
