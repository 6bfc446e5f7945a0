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
//
// A secret read thousands of times a second (a webhook signing secret under a delivery storm) is
// read with reveal_lingering() instead: its pages stay readable for limits::secret_linger after
// the last view ends, so the next request's view opens nothing, and one closer thread for the
// process closes them once that time has passed with no view (within two lingers of the last
// one). The reason is cost: each open and each close is an mprotect, and in a multi-threaded
// process every mprotect that changes a page's access flushes the TLB of every core the process
// runs on. One pair per webhook request cost the whole request path 30-40 us of worker CPU and
// slowed PostgreSQL on the other core (bench/webhook_load, issue #21). The trade: while a
// tenant's webhooks keep arriving its secret's pages stay readable, and they close 100-200 ms
// after the last one.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>
#include <stdexcept>
#include <string_view>

namespace bankworker::limits {

// How long a lingering view's pages stay readable after the last view of that secret ended.
inline constexpr std::chrono::milliseconds secret_linger{100};

}  // namespace bankworker::limits

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
    view(const secret* owner, bool linger) noexcept;
    const secret* owner_;
    std::string_view text_;
    bool linger_ = false;
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
  // The same, for a secret read many times a second: the pages close limits::secret_linger after
  // the last view rather than at once (see the top of this file).
  view reveal_lingering() const;

  // Constant-time for equal lengths; the length itself is not secret.
  bool equals(const secret& other) const;

  static constexpr std::string_view redacted_text = "<redacted>";

 private:
  friend secret read_secret_file(const std::filesystem::path&, file_permissions);
  friend class lingering_pages;
  struct access_state;
  explicit secret(std::size_t size);
  void open_for_read() const;
  void close_after_read(bool linger) const noexcept;
  bool lingered() const;
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
