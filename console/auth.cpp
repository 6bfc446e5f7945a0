#include "console/auth.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>

#include "crypto/random.hpp"
#include "db/statement.hpp"

namespace bankworker::console {

namespace {

using db::exec_statement;
using db::exec_statement1;

constexpr db::statement insert_operator{
    "console_insert_operator",
    "INSERT INTO bankworker.operators (operator_id, name, password_hash) VALUES ($1, $2, $3)"
    " ON CONFLICT (name) DO NOTHING"};
constexpr db::statement delete_operator{"console_delete_operator",
                                        "DELETE FROM bankworker.operators WHERE name = $1"};
constexpr db::statement select_operators{
    "console_select_operators",
    "SELECT operator_id::text, name, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    " FROM bankworker.operators ORDER BY name LIMIT 10000"};
constexpr db::statement select_operator{
    "console_select_operator",
    "SELECT operator_id::text, password_hash FROM bankworker.operators WHERE name = $1"};
constexpr db::statement delete_expired_sessions{
    "console_delete_expired_sessions", "DELETE FROM bankworker.operator_sessions WHERE expires_at <= now()"};
constexpr db::statement insert_session{
    "console_insert_session",
    "INSERT INTO bankworker.operator_sessions (session_hash, operator_id, csrf_token, expires_at)"
    " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"};
constexpr db::statement select_session{
    "console_select_session",
    "SELECT s.operator_id::text, o.name, s.csrf_token FROM bankworker.operator_sessions s"
    " JOIN bankworker.operators o USING (operator_id) WHERE s.session_hash = $1 AND s.expires_at > now()"};
constexpr db::statement delete_session{"console_delete_session",
                                       "DELETE FROM bankworker.operator_sessions WHERE session_hash = $1"};

// The session table's key: BLAKE2b-256 of the cookie, so the table alone opens no session.
pqxx::binarystring session_key(std::string_view cookie) {
  std::array<unsigned char, crypto_generichash_BYTES> hash{};
  crypto_generichash(hash.data(), hash.size(), reinterpret_cast<const unsigned char*>(cookie.data()), cookie.size(),
                     nullptr, 0);
  return pqxx::binarystring(hash.data(), hash.size());
}

}  // namespace

password_cost interactive_password_cost() noexcept {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

password_cost minimum_password_cost() noexcept {
  return {crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN};
}

std::optional<std::string> check_operator_name(std::string_view name) {
  if (name.empty() || name.size() > operator_name_bytes_max) {
    return "operator name must be 1.." + std::to_string(operator_name_bytes_max) + " bytes (operator_name_bytes_max)";
  }
  const auto allowed = [](char c, bool first) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
    return !first && (c == '.' || c == '_' || c == '@' || c == '-');
  };
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!allowed(name[i], i == 0)) return "operator name must be lowercase letters, digits and . _ @ - (not first)";
  }
  return std::nullopt;
}

std::optional<std::string> check_password(const crypto::secret& password) {
  if (password.size() < password_bytes_min || password.size() > password_bytes_max) {
    return "password must be " + std::to_string(password_bytes_min) + ".." + std::to_string(password_bytes_max) +
           " bytes (password_bytes_min, password_bytes_max)";
  }
  return std::nullopt;
}

std::string hash_password(const crypto::secret& password, password_cost cost) {
  std::array<char, crypto_pwhash_STRBYTES> text{};
  const auto view = password.reveal();
  if (crypto_pwhash_str_alg(text.data(), view.text().data(), view.size(), cost.ops, cost.memory_bytes,
                            crypto_pwhash_ALG_ARGON2ID13) != 0) {
    throw std::runtime_error("crypto_pwhash_str_alg: out of memory for the password hash's cost");
  }
  return std::string(text.data());
}

bool password_matches(std::string_view hash, const crypto::secret& password) {
  if (hash.size() >= crypto_pwhash_STRBYTES) return false;
  std::array<char, crypto_pwhash_STRBYTES> text{};
  std::copy(hash.begin(), hash.end(), text.begin());
  const auto view = password.reveal();
  return crypto_pwhash_str_verify(text.data(), view.text().data(), view.size()) == 0;
}

void add_operator(pqxx::work& tx, std::string_view name, std::string_view password_hash) {
  const auto inserted = exec_statement(tx, insert_operator, crypto::random_uuid().to_string(), std::string(name),
                                       std::string(password_hash));
  if (inserted.affected_rows() == 0) throw operator_exists("operator " + std::string(name) + " exists already");
}

bool remove_operator(pqxx::work& tx, std::string_view name) {
  return exec_statement(tx, delete_operator, std::string(name)).affected_rows() > 0;
}

std::vector<operator_account> list_operators(pqxx::transaction_base& tx) {
  std::vector<operator_account> accounts;
  for (const auto& row : exec_statement(tx, select_operators)) {
    accounts.push_back({*core::uuid::parse(row[0].as<std::string>()), row[1].as<std::string>(), row[2].as<std::string>()});
  }
  return accounts;
}

std::optional<operator_credentials> find_operator(pqxx::transaction_base& tx, std::string_view name) {
  const auto rows = exec_statement(tx, select_operator, std::string(name));
  if (rows.empty()) return std::nullopt;
  return operator_credentials{*core::uuid::parse(rows[0][0].as<std::string>()), rows[0][1].as<std::string>()};
}

std::string random_token_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  randombytes_buf(raw.data(), raw.size());
  std::string hex(bytes * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), raw.data(), raw.size());
  hex.pop_back();
  sodium_memzero(raw.data(), raw.size());
  return hex;
}

opened_session open_session(pqxx::work& tx, const core::uuid& operator_id, std::chrono::seconds lifetime) {
  exec_statement(tx, delete_expired_sessions);
  opened_session opened{random_token_hex(32), random_token_hex(32)};
  exec_statement(tx, insert_session, session_key(opened.cookie), operator_id.to_string(), opened.csrf_token,
                 static_cast<double>(lifetime.count()));
  return opened;
}

std::optional<session> find_session(pqxx::transaction_base& tx, std::string_view cookie) {
  if (cookie.size() != 64) return std::nullopt;
  const auto rows = exec_statement(tx, select_session, session_key(cookie));
  if (rows.empty()) return std::nullopt;
  return session{*core::uuid::parse(rows[0][0].as<std::string>()), rows[0][1].as<std::string>(),
                 rows[0][2].as<std::string>()};
}

void close_session(pqxx::work& tx, std::string_view cookie) { exec_statement(tx, delete_session, session_key(cookie)); }

bool tokens_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size() || a.empty()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

login_limiter::login_limiter(login_limits limits, clock_function clock)
    : limits_(limits), clock_(clock ? std::move(clock) : clock_function([] { return std::chrono::steady_clock::now(); })) {}

bool login_limiter::over(const std::string& key, std::size_t max, std::chrono::steady_clock::time_point now) {
  const auto found = failed_.find(key);
  if (found == failed_.end()) return false;
  auto& at = found->second.at;
  std::erase_if(at, [&](const auto& when) { return now - when >= limits_.window; });
  if (at.empty()) {
    failed_.erase(found);
    return false;
  }
  return at.size() >= max;
}

void login_limiter::add(const std::string& key, std::size_t max, std::chrono::steady_clock::time_point now) {
  if (failed_.size() >= limits_.keys_max && !failed_.contains(key)) {
    // Forget the key whose latest failure is oldest: the bound holds under a flood of new names.
    const auto oldest = std::min_element(failed_.begin(), failed_.end(), [](const auto& a, const auto& b) {
      return a.second.at.back() < b.second.at.back();
    });
    failed_.erase(oldest);
  }
  auto& at = failed_[key].at;
  at.push_back(now);
  if (at.size() > max) at.erase(at.begin());
}

std::optional<std::string> login_limiter::refused(std::string_view address, std::string_view account) {
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  if (over("a:" + std::string(address), limits_.address_failures_max, now)) return std::string("address");
  if (over("n:" + std::string(account), limits_.account_failures_max, now)) return std::string("account");
  return std::nullopt;
}

void login_limiter::record_failure(std::string_view address, std::string_view account) {
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  add("a:" + std::string(address), limits_.address_failures_max, now);
  add("n:" + std::string(account), limits_.account_failures_max, now);
}

void login_limiter::record_success(std::string_view account) {
  std::lock_guard lock(mutex_);
  failed_.erase("n:" + std::string(account));
}

}  // namespace bankworker::console
