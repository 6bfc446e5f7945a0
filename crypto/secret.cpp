#include "crypto/secret.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/assert.hpp"
#include "core/limits.hpp"

namespace bankworker::crypto {

// How many views of one secret are open and whether its pages are readable: always while a view
// is open, and after the last lingering view until close_at (lingering_pages closes them).
struct secret::access_state {
  std::mutex mutex;
  std::size_t readers = 0;
  bool open = false;        // the pages are readable now
  bool registered = false;  // lingering_pages holds it (release() must then take it out)
  std::chrono::steady_clock::time_point close_at;
  unsigned char* bytes = nullptr;
};

secret::secret() noexcept = default;

secret::secret(std::size_t size) : size_(size), access_(std::make_unique<access_state>()) {
  BW_ASSERT(size > 0);
  bytes_ = static_cast<unsigned char*>(sodium_malloc(size));
  if (bytes_ == nullptr) throw std::bad_alloc();
  access_->bytes = bytes_;
  // sodium_malloc already tries to lock the region but ignores the outcome; asking again is
  // harmless and tells us whether these bytes can reach swap.
  locked_ = sodium_mlock(bytes_, size) == 0;
  // Left writable: the factory that called this fills the bytes, then closes the pages.
}

namespace {

void close_pages(unsigned char* bytes) {
  // mprotect on our own sodium_malloc region fails only if the address is wrong, which is a bug.
  const int closed = sodium_mprotect_noaccess(bytes);
  BW_INVARIANT(closed == 0);
}

}  // namespace

// The closer of lingering pages (secret.hpp): one thread for the process, started by the first
// lingering view and never stopped. It is never destroyed either, so a secret released during
// exit still finds it; it holds no secret of its own. Lock order: a secret's mutex, then this
// one's; the closer holds this one and only tries a secret's (a busy secret is looked at again
// next round).
class lingering_pages {
 public:
  static lingering_pages& instance() {
    static lingering_pages* const pages = new lingering_pages();
    return *pages;
  }

  // Called with the secret's mutex held.
  void add(secret::access_state* state) {
    std::lock_guard lock(mutex_);
    open_.push_back(state);
    if (open_.size() == 1) wake_.notify_one();
  }

  // Called without the secret's mutex; afterwards the closer no longer touches `state`.
  void remove(secret::access_state* state) {
    std::lock_guard lock(mutex_);
    std::erase(open_, state);
  }

 private:
  lingering_pages() {
    std::thread([this] { run(); }).detach();
  }

  [[noreturn]] void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return !open_.empty(); });
      wake_.wait_for(lock, limits::secret_linger);
      const auto now = std::chrono::steady_clock::now();
      std::erase_if(open_, [now](secret::access_state* state) {
        std::unique_lock held(state->mutex, std::try_to_lock);
        if (!held.owns_lock()) return false;
        if (state->open && state->readers == 0 && now >= state->close_at) {
          close_pages(state->bytes);
          state->open = false;
        }
        state->registered = state->open;
        return !state->open;  // closed now, or by a plain view meanwhile
      });
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<secret::access_state*> open_;
};

secret secret::copy_of(std::string_view plaintext) {
  if (plaintext.empty()) return secret{};
  secret result(plaintext.size());
  std::memcpy(result.bytes_, plaintext.data(), plaintext.size());
  close_pages(result.bytes_);
  return result;
}

secret secret::random(std::size_t size) {
  BW_ASSERT(size > 0);
  secret result(size);
  randombytes_buf(result.bytes_, size);
  close_pages(result.bytes_);
  return result;
}

secret secret::filled(std::size_t size, const std::function<bool(unsigned char* bytes)>& fill) {
  BW_ASSERT(size > 0);
  secret result(size);
  bool kept = false;
  try {
    kept = fill(result.bytes_);
  } catch (...) {
    close_pages(result.bytes_);
    throw;
  }
  close_pages(result.bytes_);
  if (!kept) return secret{};  // `result` zeroes and frees the region
  return result;
}

secret::secret(secret&& other) noexcept
    : bytes_(std::exchange(other.bytes_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      locked_(std::exchange(other.locked_, false)),
      access_(std::move(other.access_)) {}

secret& secret::operator=(secret&& other) noexcept {
  if (this != &other) {
    release();
    bytes_ = std::exchange(other.bytes_, nullptr);
    size_ = std::exchange(other.size_, 0);
    locked_ = std::exchange(other.locked_, false);
    access_ = std::move(other.access_);
  }
  return *this;
}

secret::~secret() { release(); }

void secret::release() noexcept {
  if (bytes_ != nullptr) {
    BW_ASSERT(access_ == nullptr || access_->readers == 0);
    if (access_ != nullptr && lingered()) lingering_pages::instance().remove(access_.get());
    // The pages may be closed; sodium_free opens them, zeroes the region and unmaps it (and
    // unlocks what sodium_malloc locked).
    sodium_free(bytes_);
  }
  bytes_ = nullptr;
  size_ = 0;
  locked_ = false;
  access_.reset();
}

// Whether its pages linger open now, held by lingering_pages (which sets `registered` false only
// as it lets go of them).
bool secret::lingered() const {
  std::lock_guard lock(access_->mutex);
  return access_->registered;
}

void secret::open_for_read() const {
  if (bytes_ == nullptr) return;
  std::lock_guard lock(access_->mutex);
  if (!access_->open) {
    const int opened = sodium_mprotect_readonly(bytes_);
    BW_INVARIANT(opened == 0);
    access_->open = true;
  }
  ++access_->readers;
}

void secret::close_after_read(bool linger) const noexcept {
  if (bytes_ == nullptr) return;
  std::lock_guard lock(access_->mutex);
  BW_ASSERT(access_->readers > 0);
  if (--access_->readers != 0) return;
  if (!linger) {
    close_pages(bytes_);
    access_->open = false;
    return;
  }
  access_->close_at = std::chrono::steady_clock::now() + limits::secret_linger;
  if (!access_->registered) {
    access_->registered = true;
    lingering_pages::instance().add(access_.get());
  }
}

secret::view::view(const secret* owner, bool linger) noexcept : owner_(owner), linger_(linger) {
  if (owner_->bytes_ != nullptr) text_ = std::string_view(reinterpret_cast<const char*>(owner_->bytes_), owner_->size_);
}

secret::view::view(view&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), text_(std::exchange(other.text_, {})), linger_(other.linger_) {}

secret::view::~view() {
  if (owner_ != nullptr) owner_->close_after_read(linger_);
}

secret::view secret::reveal() const {
  open_for_read();
  return view(this, false);
}

secret::view secret::reveal_lingering() const {
  open_for_read();
  return view(this, true);
}

bool secret::equals(const secret& other) const {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  const view mine = reveal();
  const view theirs = other.reveal();
  return sodium_memcmp(mine.data(), theirs.data(), size_) == 0;
}

std::ostream& operator<<(std::ostream& out, const secret&) { return out << secret::redacted_text; }
std::ostream& operator<<(std::ostream& out, const secret::view&) { return out << secret::redacted_text; }

namespace {

// Closes the descriptor on every path out of read_secret_file.
struct file_descriptor {
  int fd;
  ~file_descriptor() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

secret read_secret_file(const std::filesystem::path& path, file_permissions permissions) {
  const std::string name = path.string();
  file_descriptor file{::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY)};
  if (file.fd < 0) {
    throw secret_file_error(name + ": cannot open: " + std::strerror(errno));
  }
  struct stat status {};
  if (::fstat(file.fd, &status) != 0) {
    throw secret_file_error(name + ": cannot stat: " + std::strerror(errno));
  }
  if (!S_ISREG(status.st_mode)) throw secret_file_error(name + ": not a regular file");
  if (permissions == file_permissions::owner_or_group_only && (status.st_mode & S_IRWXO) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(status.st_mode & 07777));
    throw secret_file_error(name + ": readable by others (mode " + mode + "); run chmod o-rwx on it");
  }
  if (status.st_size <= 0) throw secret_file_error(name + ": empty");
  if (static_cast<std::size_t>(status.st_size) > limits::secret_file_bytes_max) {
    throw secret_file_error(name + ": larger than secret_file_bytes_max (" +
                            std::to_string(limits::secret_file_bytes_max) + " bytes)");
  }

  // Read into guarded memory one byte larger than the limit, so a file that grew after fstat is
  // noticed rather than silently cut.
  secret buffer(limits::secret_file_bytes_max + 1);
  std::size_t filled = 0;
  while (filled < buffer.size_) {
    const ssize_t got = ::read(file.fd, buffer.bytes_ + filled, buffer.size_ - filled);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw secret_file_error(name + ": cannot read: " + std::strerror(errno));
    if (got == 0) break;
    filled += static_cast<std::size_t>(got);
  }
  if (filled > limits::secret_file_bytes_max) {
    throw secret_file_error(name + ": larger than secret_file_bytes_max (" +
                            std::to_string(limits::secret_file_bytes_max) + " bytes)");
  }
  if (filled > 0 && buffer.bytes_[filled - 1] == '\n') --filled;
  if (filled > 0 && buffer.bytes_[filled - 1] == '\r') --filled;
  if (filled == 0) throw secret_file_error(name + ": empty");

  secret result = secret::copy_of(std::string_view{reinterpret_cast<const char*>(buffer.bytes_), filled});
  return result;
}

}  // namespace bankworker::crypto
