#pragma once
// Root keys and key stores for tests. The keys here are public (they are in the source): never
// use them outside tests.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "db/keys.hpp"

namespace bankworker::test {

inline constexpr std::string_view test_root_key_hex = "8f1c2a7d9e4b6035c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738";
inline constexpr std::string_view other_root_key_hex = "1d0e9c8b7a695847362514f3e2d1c0b1a29384756a5b4c3d2e1f00ffeeddccbb";

// A key store over a file root key with the given hex key.
std::unique_ptr<db::key_store> test_key_store(db::key_store_settings settings = {},
                                              std::string_view root_key_hex = test_root_key_hex);

// A root key file (mode 0600 unless told otherwise) in a fresh temporary directory, removed with it.
class root_key_file {
 public:
  explicit root_key_file(std::string_view hex = test_root_key_hex, unsigned mode = 0600);
  root_key_file(const root_key_file&) = delete;
  root_key_file& operator=(const root_key_file&) = delete;
  ~root_key_file();
  const std::filesystem::path& path() const { return path_; }
  std::string path_text() const { return path_.string(); }

 private:
  std::filesystem::path directory_;
  std::filesystem::path path_;
};

}  // namespace bankworker::test
