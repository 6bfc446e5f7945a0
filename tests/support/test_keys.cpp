#include "tests/support/test_keys.hpp"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

#include "crypto/root_key.hpp"

namespace bankworker::test {

std::unique_ptr<db::key_store> test_key_store(db::key_store_settings settings, std::string_view root_key_hex) {
  crypto::secret key = crypto::secret::filled(crypto::key_bytes, [&](unsigned char* out) {
    std::size_t length = 0;
    return sodium_hex2bin(out, crypto::key_bytes, root_key_hex.data(), root_key_hex.size(), nullptr, &length,
                          nullptr) == 0 &&
           length == crypto::key_bytes;
  });
  if (key.empty()) throw std::invalid_argument("test root key must be 64 hex digits");
  return std::make_unique<db::key_store>(
      crypto::root_key_ring(std::make_unique<crypto::file_root_key>(std::move(key))), settings);
}

root_key_file::root_key_file(std::string_view hex, unsigned mode) {
  char pattern[] = "/tmp/bankworker-root-key-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  directory_ = pattern;
  path_ = directory_ / "root-key";
  std::ofstream(path_) << hex << '\n';
  ::chmod(path_.c_str(), mode);
}

root_key_file::~root_key_file() {
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

}  // namespace bankworker::test
