#pragma once
// Plaid's HTTP API as bankworker uses it (DESIGN.md §1.1, §1.2, §1.4): typed calls over
// connectors/http, Plaid's error object parsed and classified, and one call_record per call for
// the external-call log. Pure of policy: it never retries or sleeps (STYLE.md §3: it returns a
// typed error; the job boundary decides).
//
// Credentials travel in the JSON body (client_id, secret, access_token), which is built in guarded
// memory and zeroed after the call; never in headers, logs, errors or call records.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "connectors/http/client.hpp"
#include "connectors/plaid/errors.hpp"
#include "connectors/plaid/sync_page.hpp"
#include "connectors/plaid/webhook_verify.hpp"
#include "core/currency.hpp"
#include "crypto/secret.hpp"

namespace bankworker::plaid {

struct client_settings {
  std::string base_url;  // https://production.plaid.com, or the simulator on loopback
  std::chrono::milliseconds request_timeout{30'000};
  std::size_t sync_count = 500;  // /transactions/sync `count` (Plaid's maximum)
  std::string plaid_version = "2020-09-14";
};

// One line of the external-call log (bankworker.external_calls), without the tenant.
using call_record = connectors::http::call_record;

template <class T>
struct result {
  std::optional<T> value;  // set on success
  error failure;           // meaningful when !value
  call_record call;
  bool ok() const noexcept { return value.has_value(); }
};

struct exchange_result {
  crypto::secret access_token;
  std::string item_id;
};

// accounts, item_id, institution_id: filled by parse_accounts_page (sync_page.hpp), which reads
// accounts exactly as a sync page does.
using accounts_result = accounts_page;

struct remove_result {
  bool removed = true;  // false never happens today; kept for symmetry with Plaid's answer
};

class client {
 public:
  // `http` and `currencies` outlive the client. client_id and secret are kept in guarded memory.
  client(connectors::http::client& http, const core::currency_table& currencies, client_settings settings,
         crypto::secret client_id, crypto::secret api_secret);

  boost::asio::awaitable<result<exchange_result>> exchange_public_token(std::string public_token) const;
  boost::asio::awaitable<result<accounts_result>> get_accounts(const crypto::secret& access_token) const;
  // One page from `cursor` (empty: from the beginning). The page is parsed and normalised with
  // parse_sync_page; `parser` is the caller's (one per thread, reused).
  boost::asio::awaitable<result<sync_page>> sync_transactions(const crypto::secret& access_token, std::string cursor,
                                                              simdjson::ondemand::parser& parser) const;
  boost::asio::awaitable<result<remove_result>> remove_item(const crypto::secret& access_token) const;
  boost::asio::awaitable<result<verification_key>> get_webhook_verification_key(std::string key_id) const;

  const client_settings& settings() const noexcept { return settings_; }

  // Replaces the API secret (SIGHUP after a rotation) for every request that starts from now on; a
  // request in flight keeps the secret it started with. Safe from any thread.
  void replace_secret(crypto::secret api_secret);

 private:
  connectors::http::client& http_;
  const core::currency_table& currencies_;
  const client_settings settings_;
  crypto::secret client_id_;
  std::shared_ptr<const crypto::secret> current_secret() const;

  mutable std::mutex secret_mutex_;  // guards api_secret_ (the pointer, not the secret)
  std::shared_ptr<const crypto::secret> api_secret_;
};

}  // namespace bankworker::plaid
