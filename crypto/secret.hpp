#pragma once
// A secret (access token, webhook secret, API key, key material) as a type (STYLE.md §11).
//
// Move-only; the bytes live in sodium_malloc memory (guard pages, locked where the system allows)
// and are zeroed when the secret is destroyed or overwritten. It never converts to a string: the
// only way to the bytes is reveal(), which is easy to find in review. Streaming it prints
// "<redacted>". Comparison is constant-time.

#include <cstddef>
#include <filesystem>
#include <iosfwd>
#include <stdexcept>
#include <string_view>

namespace bankworker::crypto {

enum class file_permissions { any, owner_or_group_only };

class secret {
 public:
  secret() noexcept = default;
  // Copies `plaintext` into guarded memory. The caller zeroes its own copy.
  static secret copy_of(std::string_view plaintext);

  secret(const secret&) = delete;
  secret& operator=(const secret&) = delete;
  secret(secret&& other) noexcept;
  secret& operator=(secret&& other) noexcept;
  ~secret();

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  // The plaintext, valid while this secret lives and is not moved from. Never log it.
  std::string_view reveal() const noexcept;

  // Constant-time for equal lengths; the length itself is not secret.
  bool equals(const secret& other) const noexcept;

  static constexpr std::string_view redacted_text = "<redacted>";

 private:
  friend secret read_secret_file(const std::filesystem::path&, file_permissions);
  explicit secret(std::size_t size);
  void release() noexcept;

  char* bytes_ = nullptr;
  std::size_t size_ = 0;
};

std::ostream& operator<<(std::ostream& out, const secret&);

// Why a secret file could not be used. The message names the file and the reason, never content.
class secret_file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads a secret from a file straight into guarded memory (no std::string copy on the way),
// dropping one trailing newline. Fails when the file is unreadable, empty, larger than
// limits::secret_file_bytes_max, or readable by others when `permissions` demands it.
secret read_secret_file(const std::filesystem::path& path,
                        file_permissions permissions = file_permissions::any);

}  // namespace bankworker::crypto
