#include "tests/sim/vault_sim.hpp"

#include <sodium.h>

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <map>
#include <mutex>

#include <simdjson.h>

#include "crypto/audit_signing.hpp"

namespace bankworker::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct vault_sim::state {
  std::string token;
  std::string mount;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::mutex mutex;
  std::map<std::string, std::array<unsigned char, 32>> keys;  // per key name
  int fail_count = 0;
  int fail_status = 0;
  std::chrono::milliseconds stall{0};
  std::atomic<bool> stopping{false};
};

namespace {

std::string error_body(const std::string& message) { return "{\"errors\":[\"" + message + "\"]}"; }

}  // namespace

vault_sim::vault_sim(std::string token, std::string mount) : state_(std::make_unique<state>()) {
  state_->token = std::move(token);
  state_->mount = std::move(mount);
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  state_->acceptor.open(endpoint.protocol());
  state_->acceptor.set_option(asio::socket_base::reuse_address(true));
  state_->acceptor.bind(endpoint);
  state_->acceptor.listen();
  thread_ = std::thread([this] { serve(); });
}

vault_sim::~vault_sim() {
  state_->stopping = true;
  // Wake the blocking accept with a connection of our own.
  try {
    asio::io_context io;
    tcp::socket poke(io);
    poke.connect(state_->acceptor.local_endpoint());
  } catch (const std::exception&) {
  }
  thread_.join();
}

std::string vault_sim::address() const {
  return "http://127.0.0.1:" + std::to_string(state_->acceptor.local_endpoint().port());
}

void vault_sim::fail_next(int count, int status) {
  std::lock_guard lock(state_->mutex);
  state_->fail_count = count;
  state_->fail_status = status;
}

void vault_sim::stall_next(std::chrono::milliseconds delay) {
  std::lock_guard lock(state_->mutex);
  state_->stall = delay;
}

void vault_sim::serve() {
  while (!state_->stopping) {
    tcp::socket socket(state_->io);
    beast::error_code error;
    state_->acceptor.accept(socket, error);
    if (error || state_->stopping) continue;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    http::read(socket, buffer, request, error);
    if (error) continue;
    ++requests_;

    http::response<http::string_body> response{http::status::ok, request.version()};
    response.set(http::field::content_type, "application/json");
    response.keep_alive(false);
    std::chrono::milliseconds stall{0};
    int fail_status = 0;
    {
      std::lock_guard lock(state_->mutex);
      stall = std::exchange(state_->stall, std::chrono::milliseconds{0});
      if (state_->fail_count > 0) {
        --state_->fail_count;
        fail_status = state_->fail_status;
      }
    }
    if (stall.count() > 0) std::this_thread::sleep_for(stall);

    const std::string target(request.target());
    const std::string prefix = "/v1/" + state_->mount + "/";
    const bool encrypt = target.starts_with(prefix + "encrypt/");
    const bool decrypt = target.starts_with(prefix + "decrypt/");
    const std::string key_name = target.substr(target.rfind('/') + 1);
    if (fail_status != 0) {
      response.result(static_cast<http::status>(fail_status));
      response.body() = error_body("injected failure");
    } else if (request["X-Vault-Token"] != state_->token) {
      response.result(http::status::forbidden);
      response.body() = error_body("permission denied");
    } else if (request.method() != http::verb::post || (!encrypt && !decrypt)) {
      response.result(http::status::not_found);
      response.body() = error_body("no handler for route");
    } else {
      simdjson::ondemand::parser parser;
      simdjson::padded_string padded(request.body());
      std::array<unsigned char, 32> key{};
      {
        std::lock_guard lock(state_->mutex);
        auto [it, fresh] = state_->keys.try_emplace(key_name);
        if (fresh) randombytes_buf(it->second.data(), it->second.size());
        key = it->second;
      }
      try {
        auto document = parser.iterate(padded);
        std::string_view aad_text = document["associated_data"].get_string();
        const auto aad = crypto::from_base64(aad_text);
        if (!aad) throw std::runtime_error("associated_data is not base64");
        if (encrypt) {
          std::string_view plain_text = document["plaintext"].get_string();
          const auto plain = crypto::from_base64(plain_text);
          if (!plain) throw std::runtime_error("plaintext is not base64");
          crypto::bytes sealed(24 + plain->size() + 16);
          randombytes_buf(sealed.data(), 24);
          unsigned long long written = 0;
          crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data() + 24, &written, plain->data(), plain->size(),
                                                     aad->data(), aad->size(), nullptr, sealed.data(), key.data());
          response.body() = "{\"data\":{\"ciphertext\":\"vault:v1:" + crypto::to_base64(sealed) + "\",\"key_version\":1}}";
        } else {
          std::string_view ciphertext = document["ciphertext"].get_string();
          if (!ciphertext.starts_with("vault:v1:")) throw std::runtime_error("invalid ciphertext: no prefix");
          const auto sealed = crypto::from_base64(ciphertext.substr(9));
          if (!sealed || sealed->size() < 40) throw std::runtime_error("invalid ciphertext");
          crypto::bytes plain(sealed->size() - 40);
          unsigned long long written = 0;
          if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain.data(), &written, nullptr, sealed->data() + 24,
                                                         sealed->size() - 24, aad->data(), aad->size(), sealed->data(),
                                                         key.data()) != 0) {
            throw std::runtime_error("cipher: message authentication failed");
          }
          response.body() = "{\"data\":{\"plaintext\":\"" + crypto::to_base64(plain) + "\"}}";
          sodium_memzero(plain.data(), plain.size());
        }
      } catch (const std::exception& failure) {
        response.result(http::status::bad_request);
        response.body() = error_body(failure.what());
      }
    }
    response.prepare_payload();
    http::write(socket, response, error);
    socket.shutdown(tcp::socket::shutdown_both, error);
  }
}

}  // namespace bankworker::test
