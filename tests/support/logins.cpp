#include "tests/support/logins.hpp"

#include <sodium.h>

#include <stdexcept>

#include <pqxx/pqxx>

namespace bankworker::test {

std::string create_login(const std::string& admin_url, const std::string& url, std::string_view login,
                         std::string_view role) {
  char password[33];
  unsigned char random[16];
  randombytes_buf(random, sizeof random);
  sodium_bin2hex(password, sizeof password, random, sizeof random);
  {
    pqxx::connection connection(admin_url);
    pqxx::nontransaction tx(connection);
    tx.exec("CREATE ROLE " + tx.quote_name(std::string(login)) +
            " LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD " + tx.quote(std::string(password)) + " IN ROLE " +
            tx.quote_name(std::string(role)));
  }
  return url_as(url, login, password);
}

std::string url_as(const std::string& url, std::string_view login, std::string_view password) {
  const std::size_t scheme = url.find("://");
  const std::size_t at = scheme == std::string::npos ? std::string::npos : url.find('@', scheme + 3);
  if (at == std::string::npos) throw std::invalid_argument("url_as: expected a URI with user@host");
  return url.substr(0, scheme + 3) + std::string(login) + ":" + std::string(password) + url.substr(at);
}

}  // namespace bankworker::test
