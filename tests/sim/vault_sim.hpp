#pragma once
// A small stand-in for Vault's Transit engine: POST /v1/<mount>/encrypt/<key> and /decrypt/<key>
// with base64 plaintext and associated data, ciphertexts "vault:v1:<base64>". It checks the
// X-Vault-Token header and can be told to fail or stall the next requests, so tests drive every
// error path of the provider. Listens on 127.0.0.1 on a free port; one thread, one request per
// connection.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

namespace bankworker::test {

class vault_sim {
 public:
  explicit vault_sim(std::string token, std::string mount = "transit");
  vault_sim(const vault_sim&) = delete;
  vault_sim& operator=(const vault_sim&) = delete;
  ~vault_sim();

  std::string address() const;  // http://127.0.0.1:<port>
  // The next `count` requests answer `status` with a Vault-style error body.
  void fail_next(int count, int status);
  // The next request waits this long before answering.
  void stall_next(std::chrono::milliseconds delay);
  int requests() const { return requests_.load(); }

 private:
  struct state;
  void serve();

  std::unique_ptr<state> state_;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace bankworker::test
