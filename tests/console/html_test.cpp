// The console's pure parts: escaping, form decoding, the layout and headers, the password hash,
// and the login limiter (console/html.hpp, console/auth.hpp, service/admin_page.hpp).
#include <catch2/catch.hpp>

#include <sodium.h>

#include "console/auth.hpp"
#include "console/html.hpp"
#include "service/admin_page.hpp"

using namespace bankworker;

TEST_CASE("escape_html turns every markup character into a character reference", "[console]") {
  CHECK(service::escape_html("<script>alert('x')&\"</script>") ==
        "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;");
  CHECK(service::escape_html("plain text, ünïcode") == "plain text, ünïcode");
}

TEST_CASE("the layout escapes the title and the operator's name, and never holds a script", "[console]") {
  const console::nav_link links[] = {{"/console/jobs?a=\"b\"", "<Jobs>"}};
  const std::string page = console::render_page("<script>t</script>", "<img src=x>", links, "tok\"en", "<p>body</p>");
  CHECK(page.find("<script") == std::string::npos);
  CHECK(page.find("&lt;script&gt;t&lt;/script&gt;") != std::string::npos);
  CHECK(page.find("&lt;img src=x&gt;") != std::string::npos);
  CHECK(page.find("&lt;Jobs&gt;") != std::string::npos);
  CHECK(page.find("href=\"/console/jobs?a=&quot;b&quot;\"") != std::string::npos);
  CHECK(page.find("name=\"csrf\" value=\"tok&quot;en\"") != std::string::npos);
  CHECK(page.find("<p>body</p>") != std::string::npos);
}

TEST_CASE("every console response carries a CSP without script, frame-ancestors none, nosniff, no-referrer", "[console]") {
  const auto headers = console::security_headers();
  const auto value = [&](std::string_view name) {
    for (const auto& [key, text] : headers) {
      if (key == name) return text;
    }
    return std::string();
  };
  const std::string csp = value("Content-Security-Policy");
  CHECK(csp.find("default-src 'none'") != std::string::npos);
  CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
  CHECK(csp.find("script-src") == std::string::npos);
  CHECK(csp.find("unsafe-inline") == std::string::npos);
  CHECK(value("X-Content-Type-Options") == "nosniff");
  CHECK(value("Referrer-Policy") == "no-referrer");
  CHECK(value("X-Frame-Options") == "DENY");
}

TEST_CASE("parse_form decodes %-escapes and '+', and refuses a broken escape", "[console]") {
  const auto fields = service::parse_form("name=a+b&x=%3Cscript%3E&empty=&flag");
  REQUIRE(fields);
  REQUIRE(fields->size() == 4);
  CHECK((*fields)[0] == std::pair<std::string, std::string>{"name", "a b"});
  CHECK((*fields)[1].second == "<script>");
  CHECK((*fields)[2].second.empty());
  CHECK((*fields)[3].first == "flag");
  CHECK_FALSE(service::parse_form("a=%4"));
  CHECK_FALSE(service::parse_form("a=%zz"));
  CHECK(service::url_encode("a b&c=ü") == "a%20b%26c%3D%C3%BC");
}

TEST_CASE("passwords are hashed with argon2id and only the right one matches", "[console]") {
  const auto password = crypto::secret::copy_of("correct horse battery");
  const std::string hash = console::hash_password(password, console::minimum_password_cost());
  CHECK(hash.rfind("$argon2id$", 0) == 0);
  CHECK(console::password_matches(hash, password));
  CHECK_FALSE(console::password_matches(hash, crypto::secret::copy_of("correct horse battery!")));
  CHECK_FALSE(console::password_matches("not a hash", password));
  // Two hashes of one password differ (random salt).
  CHECK(console::hash_password(password, console::minimum_password_cost()) != hash);
}

TEST_CASE("operator names and passwords are checked before anything is stored", "[console]") {
  CHECK_FALSE(console::check_operator_name("alice"));
  CHECK_FALSE(console::check_operator_name("ops.on-call@example"));
  CHECK(console::check_operator_name(""));
  CHECK(console::check_operator_name("Alice"));
  CHECK(console::check_operator_name("-alice"));
  CHECK(console::check_operator_name("<script>"));
  CHECK(console::check_password(crypto::secret::copy_of("short")));
  CHECK_FALSE(console::check_password(crypto::secret::copy_of("twelve bytes")));
}

TEST_CASE("the login limiter refuses an account after its failures and lets it in once the window passes", "[console]") {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  console::login_limiter limiter({.address_failures_max = 100, .account_failures_max = 3,
                                  .window = std::chrono::seconds(60), .keys_max = 10},
                                 [&now] { return now; });
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(limiter.refused("10.0.0.1", "alice"));
    limiter.record_failure("10.0.0.1", "alice");
  }
  CHECK(limiter.refused("10.0.0.2", "alice") == std::optional<std::string>("account"));
  CHECK_FALSE(limiter.refused("10.0.0.2", "bob"));
  now += std::chrono::seconds(61);
  CHECK_FALSE(limiter.refused("10.0.0.2", "alice"));
}

TEST_CASE("the login limiter refuses an address that tries many accounts", "[console]") {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  console::login_limiter limiter({.address_failures_max = 4, .account_failures_max = 3,
                                  .window = std::chrono::seconds(60), .keys_max = 100},
                                 [&now] { return now; });
  for (int i = 0; i < 4; ++i) limiter.record_failure("10.0.0.9", "name" + std::to_string(i));
  CHECK(limiter.refused("10.0.0.9", "fresh") == std::optional<std::string>("address"));
  CHECK_FALSE(limiter.refused("10.0.0.8", "fresh"));
}

TEST_CASE("the login limiter stays within keys_max however many names are tried", "[console]") {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  console::login_limiter limiter({.address_failures_max = 1'000'000, .account_failures_max = 1,
                                  .window = std::chrono::seconds(60), .keys_max = 8},
                                 [&now] { return now; });
  for (int i = 0; i < 100; ++i) {
    now += std::chrono::milliseconds(1);
    limiter.record_failure("10.0.0.1", "name" + std::to_string(i));
  }
  // The newest names are still refused; the oldest were forgotten to keep the bound.
  CHECK(limiter.refused("10.0.0.7", "name99") == std::optional<std::string>("account"));
  CHECK_FALSE(limiter.refused("10.0.0.7", "name0"));
}
