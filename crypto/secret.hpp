#pragma once
// A secret (access token, webhook secret, API key, key material) as a type (STYLE.md §11).
//
// Move-only; the bytes live in sodium_malloc memory (guard pages before and after, a canary) that
// is locked into RAM with sodium_mlock (the result is checked and kept: see locked()) and kept
// PROT_NONE while nobody reads it, so a stray pointer, a heap overread or a debugger attached by
// mistake finds nothing. Reading is scoped: reveal() returns a `view` that opens the pages
// read-only and closes them again when the last view of that secret ends. The bytes are zeroed
// when the secret is destroyed or overwritten. It never converts to a string: the only way to the
// bytes is reveal(), which is easy to find in review. Streaming it prints "<redacted>".
// Comparison is constant-time.
//
// Views of one secret may be taken from several threads at once: a per-secret counter under a
// mutex decides who opens and who closes the pages.

#include <cstddef>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string_view>

namespace bankworker::crypto {

enum class file_permissions { any, owner_or_group_only };

class secret {
 public:
  // Read access to the bytes for as long as it lives. Keep it as short as the work that needs it;
  // never keep text() beyond the view's own life. There is deliberately no implicit conversion:
  // `std::string_view s = secret.reveal();` would dangle into closed pages, so it does not compile.
  class view {
   public:
    view(const view&) = delete;
    view& operator=(const view&) = delete;
    view(view&& other) noexcept;
    view& operator=(view&&) = delete;
    ~view();

    std::string_view text() const noexcept { return text_; }
    const unsigned char* data() const noexcept { return reinterpret_cast<const unsigned char*>(text_.data()); }
    std::size_t size() const noexcept { return text_.size(); }
    bool empty() const noexcept { return text_.empty(); }

    friend bool operator==(const view& a, std::string_view b) noexcept { return a.text_ == b; }

   private:
    friend class secret;
    explicit view(const secret* owner) noexcept;
    const secret* owner_;
    std::string_view text_;
  };

  secret() noexcept;
  // Copies `plaintext` into guarded memory. The caller zeroes its own copy.
  static secret copy_of(std::string_view plaintext);
  // `size` bytes from libsodium's CSPRNG (key material).
  static secret random(std::size_t size);
  // `size` bytes written by `fill` while the pages are writable, then closed. `fill` returns
  // false to abandon the secret (a failed decryption); the bytes are zeroed and filled() returns
  // an empty secret.
  static secret filled(std::size_t size, const std::function<bool(unsigned char* bytes)>& fill);

  secret(const secret&) = delete;
  secret& operator=(const secret&) = delete;
  secret(secret&& other) noexcept;
  secret& operator=(secret&& other) noexcept;
  ~secret();

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  // Whether sodium_mlock kept the pages out of swap. False when RLIMIT_MEMLOCK is exhausted; the
  // secret still works; the caller decides whether that is acceptable.
  bool locked() const noexcept { return locked_; }

  // Scoped read access to the plaintext. Never log it.
  view reveal() const;

  // Constant-time for equal lengths; the length itself is not secret.
  bool equals(const secret& other) const;

  static constexpr std::string_view redacted_text = "<redacted>";

 private:
  friend secret read_secret_file(const std::filesystem::path&, file_permissions);
  struct access_state;
  explicit secret(std::size_t size);
  void open_for_read() const;
  void close_after_read() const noexcept;
  void release() noexcept;

  unsigned char* bytes_ = nullptr;
  std::size_t size_ = 0;
  bool locked_ = false;
  std::unique_ptr<access_state> access_;
};

std::ostream& operator<<(std::ostream& out, const secret&);
std::ostream& operator<<(std::ostream& out, const secret::view&);

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
