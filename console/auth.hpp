#pragma once
// Who may use the operator console (issue #22): operator accounts with argon2id password hashes
// (libsodium's crypto_pwhash_str_alg), sessions kept server-side by the hash of their cookie, each
// with its CSRF token, and the limit on login attempts per address and per account.
//
// The console's own tables (db/migrations/0036_operator_console.sql) are not tenant data: they are
// read and written on plain transactions of the runtime login, never inside a tenant's scope.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

#include "core/uuid.hpp"
#include "crypto/secret.hpp"

namespace bankworker::console {

// argon2id's work per hash. Interactive is libsodium's recommendation for an online login (about
// 64 MiB and a tenth of a second); tests use the minimum so a suite of logins stays quick.
struct password_cost {
  unsigned long long ops = 0;
  std::size_t memory_bytes = 0;
};
password_cost interactive_password_cost() noexcept;
password_cost minimum_password_cost() noexcept;

inline constexpr std::size_t password_bytes_min = 12;
inline constexpr std::size_t password_bytes_max = 1'024;
inline constexpr std::size_t operator_name_bytes_max = 64;

// Why a name or password is unacceptable, or nothing. Names: [a-z0-9][a-z0-9._@-]*, as the table's CHECK.
std::optional<std::string> check_operator_name(std::string_view name);
std::optional<std::string> check_password(const crypto::secret& password);

// The argon2id string ($argon2id$v=19$m=…,t=…,p=1$salt$hash), salt random. Throws
// std::runtime_error when libsodium cannot allocate the memory the cost asks for.
std::string hash_password(const crypto::secret& password, password_cost cost);
// Constant-time in the password; false for a malformed hash.
bool password_matches(std::string_view hash, const crypto::secret& password);

// Raised by add_operator when the name is taken.
class operator_exists : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct operator_account {
  core::uuid id;
  std::string name;
  std::string created_at;  // ISO 8601 UTC
};

void add_operator(pqxx::work& tx, std::string_view name, std::string_view password_hash);
// Removes the operator and every session of theirs; false when there was none by that name.
bool remove_operator(pqxx::work& tx, std::string_view name);
std::vector<operator_account> list_operators(pqxx::transaction_base& tx);

struct operator_credentials {
  core::uuid id;
  std::string password_hash;
};
std::optional<operator_credentials> find_operator(pqxx::transaction_base& tx, std::string_view name);

// A signed-in operator, as a request's session cookie names them.
struct session {
  core::uuid operator_id;
  std::string operator_name;
  std::string csrf_token;  // 64 hex characters
};

struct opened_session {
  std::string cookie;      // 64 hex characters: the cookie's value, never stored
  std::string csrf_token;
};

// Opens a session that ends `lifetime` from now (the database's clock), and deletes expired ones.
opened_session open_session(pqxx::work& tx, const core::uuid& operator_id, std::chrono::seconds lifetime);
// The session this cookie names, or nothing when there is none or it has expired.
std::optional<session> find_session(pqxx::transaction_base& tx, std::string_view cookie);
void close_session(pqxx::work& tx, std::string_view cookie);

// Constant-time equality of two tokens (CSRF).
bool tokens_equal(std::string_view a, std::string_view b) noexcept;
// `bytes` random bytes as lowercase hex.
std::string random_token_hex(std::size_t bytes);

// Login attempts: after failures_max failed attempts within `window` from one address, or for one
// account name, further attempts are refused (without checking the password) until the oldest
// counted failure is `window` old. Per process, in memory, bounded: at most keys_max addresses and
// names are tracked (the least recently failed are forgotten first).
struct login_limits {
  std::size_t address_failures_max = 20;
  std::size_t account_failures_max = 5;
  std::chrono::seconds window{900};
  std::size_t keys_max = 10'000;
};

class login_limiter {
 public:
  using clock_function = std::function<std::chrono::steady_clock::time_point()>;
  // Tests pass a clock they move; empty: steady_clock.
  explicit login_limiter(login_limits limits, clock_function clock = {});

  // Why an attempt is refused now ("address", "account"), or nothing when it may go ahead.
  std::optional<std::string> refused(std::string_view address, std::string_view account);
  void record_failure(std::string_view address, std::string_view account);
  // A successful login forgets the account's failures (not the address's).
  void record_success(std::string_view account);

 private:
  struct failures {
    std::vector<std::chrono::steady_clock::time_point> at;  // oldest first, at most the key's max
  };
  bool over(const std::string& key, std::size_t max, std::chrono::steady_clock::time_point now);
  void add(const std::string& key, std::size_t max, std::chrono::steady_clock::time_point now);

  const login_limits limits_;
  const clock_function clock_;
  std::mutex mutex_;
  std::map<std::string, failures> failed_;  // guarded by mutex_; "a:" address, "n:" account
};

}  // namespace bankworker::console
