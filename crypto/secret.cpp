#include "crypto/secret.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <ostream>
#include <string>
#include <utility>

#include "core/assert.hpp"
#include "core/limits.hpp"

namespace bankworker::crypto {

secret::secret(std::size_t size) : size_(size) {
  BW_ASSERT(size > 0);
  bytes_ = static_cast<char*>(sodium_malloc(size));
  if (bytes_ == nullptr) throw std::bad_alloc();
}

secret secret::copy_of(std::string_view plaintext) {
  if (plaintext.empty()) return secret{};
  secret result(plaintext.size());
  std::memcpy(result.bytes_, plaintext.data(), plaintext.size());
  return result;
}

secret::secret(secret&& other) noexcept
    : bytes_(std::exchange(other.bytes_, nullptr)), size_(std::exchange(other.size_, 0)) {}

secret& secret::operator=(secret&& other) noexcept {
  if (this != &other) {
    release();
    bytes_ = std::exchange(other.bytes_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

secret::~secret() { release(); }

void secret::release() noexcept {
  // sodium_free zeroes the region before unmapping it.
  if (bytes_ != nullptr) sodium_free(bytes_);
  bytes_ = nullptr;
  size_ = 0;
}

std::string_view secret::reveal() const noexcept {
  return bytes_ == nullptr ? std::string_view{} : std::string_view{bytes_, size_};
}

bool secret::equals(const secret& other) const noexcept {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return sodium_memcmp(bytes_, other.bytes_, size_) == 0;
}

std::ostream& operator<<(std::ostream& out, const secret&) { return out << secret::redacted_text; }

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

  secret result = secret::copy_of(std::string_view{buffer.bytes_, filled});
  return result;
}

}  // namespace bankworker::crypto
