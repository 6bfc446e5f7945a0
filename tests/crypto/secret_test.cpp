#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <csignal>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <atomic>
#include <chrono>
#include <vector>

#include "core/limits.hpp"
#include "crypto/secret.hpp"

using bankworker::crypto::file_permissions;
using bankworker::crypto::read_secret_file;
using bankworker::crypto::secret;
using bankworker::crypto::secret_file_error;

namespace {

// A file in a fresh temporary directory, removed with it.
struct temp_file {
  std::filesystem::path directory;
  std::filesystem::path path;
  temp_file(std::string_view content, mode_t mode) {
    char pattern[] = "/tmp/bankworker-secret-test-XXXXXX";
    directory = ::mkdtemp(pattern);
    path = directory / "secret";
    std::ofstream(path, std::ios::binary) << content;
    ::chmod(path.c_str(), mode);
  }
  ~temp_file() { std::filesystem::remove_all(directory); }
};

// Whether reading one byte at `address` faults: read in a child, so the test survives the fault.
bool read_faults(const char* address) {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Die quietly of the fault itself, not through Catch's or a sanitizer's reporting handler.
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    volatile char c = *address;
    (void)c;
    ::_exit(0);  // reached only if the read succeeded
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_CASE("a secret prints as <redacted> and reveals its bytes only on request", "[crypto][secret]") {
  const secret token = secret::copy_of("access-sandbox-123");
  std::ostringstream printed;
  printed << token;
  CHECK(printed.str() == "<redacted>");
  CHECK(token.reveal() == "access-sandbox-123");
  CHECK(token.size() == 18);
}

TEST_CASE("a moved-from secret is empty and the moved-to one holds the bytes", "[crypto][secret]") {
  secret first = secret::copy_of("whsec_abc");
  secret second = std::move(first);
  CHECK(first.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is the point
  CHECK(second.reveal() == "whsec_abc");
  second = secret::copy_of("other");
  CHECK(second.reveal() == "other");
}

TEST_CASE("secrets compare by content", "[crypto][secret]") {
  CHECK(secret::copy_of("abcdef").equals(secret::copy_of("abcdef")));
  CHECK_FALSE(secret::copy_of("abcdef").equals(secret::copy_of("abcdeg")));
  CHECK_FALSE(secret::copy_of("abc").equals(secret::copy_of("abcd")));
}

TEST_CASE("a secret file is read without its trailing newline", "[crypto][secret]") {
  temp_file file("s3cr3t-value\n", 0600);
  CHECK(read_secret_file(file.path).reveal() == "s3cr3t-value");
}

TEST_CASE("unusable secret files are refused with the reason and never the content", "[crypto][secret]") {
  SECTION("missing") {
    CHECK_THROWS_WITH(read_secret_file("/nonexistent/bankworker/key"), Catch::Contains("cannot open"));
  }
  SECTION("empty") {
    temp_file file("\n", 0600);
    CHECK_THROWS_WITH(read_secret_file(file.path), Catch::Contains("empty"));
  }
  SECTION("too large") {
    temp_file file(std::string(bankworker::limits::secret_file_bytes_max + 1, 'x'), 0600);
    CHECK_THROWS_WITH(read_secret_file(file.path), Catch::Contains("secret_file_bytes_max"));
  }
  SECTION("readable by others when that is refused") {
    temp_file file("topsecretvalue", 0644);
    CHECK_THROWS_WITH(read_secret_file(file.path, file_permissions::owner_or_group_only),
                      Catch::Contains("readable by others") && !Catch::Contains("topsecretvalue"));
    CHECK(read_secret_file(file.path).reveal() == "topsecretvalue");
  }
  SECTION("a directory") {
    temp_file file("x", 0600);
    CHECK_THROWS_AS(read_secret_file(file.directory), secret_file_error);
  }
}

TEST_CASE("a secret's pages are unreadable while no view is open", "[crypto][secret]") {
  const secret key = secret::copy_of("0123456789abcdef0123456789abcdef");
  const char* address = nullptr;
  {
    const secret::view view = key.reveal();
    address = view.text().data();
    CHECK(view.text() == "0123456789abcdef0123456789abcdef");
  }
  CHECK(read_faults(address));
}

TEST_CASE("a lingering view's pages close within two lingers of the last view", "[crypto][secret]") {
  using bankworker::limits::secret_linger;
  const secret key = secret::copy_of("whsec_lingering-webhook-secret");
  const char* address = nullptr;
  {
    const secret::view view = key.reveal_lingering();
    address = view.text().data();
    CHECK(view == "whsec_lingering-webhook-secret");
  }
  // Views from several threads, lingering and plain mixed, while the closer runs.
  std::vector<std::thread> readers;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      const auto until = std::chrono::steady_clock::now() + 3 * secret_linger;
      while (std::chrono::steady_clock::now() < until) {
        const secret::view view = t % 2 == 0 ? key.reveal_lingering() : key.reveal();
        if (view.text() != "whsec_lingering-webhook-secret") ++mismatches;
      }
    });
  }
  for (auto& reader : readers) reader.join();
  CHECK(mismatches == 0);
  {
    const secret::view last = key.reveal_lingering();
    CHECK(last == "whsec_lingering-webhook-secret");
  }
  std::this_thread::sleep_for(2 * secret_linger + std::chrono::milliseconds(50));
  CHECK(read_faults(address));
  // A secret released while its pages linger leaves the closer nothing to touch (ASan would see it).
  {
    const secret brief = secret::copy_of("released-while-lingering");
    CHECK(brief.reveal_lingering() == "released-while-lingering");
  }
  std::this_thread::sleep_for(2 * secret_linger + std::chrono::milliseconds(50));
  CHECK(key.reveal_lingering() == "whsec_lingering-webhook-secret");
}

TEST_CASE("nested and concurrent views keep a secret readable until the last one ends", "[crypto][secret]") {
  const secret key = secret::copy_of("nested-view-secret");
  {
    const secret::view outer = key.reveal();
    {
      const secret::view inner = key.reveal();
      CHECK(inner == "nested-view-secret");
    }
    CHECK(outer == "nested-view-secret");  // still readable after the inner view closed
  }
  std::vector<std::thread> readers;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (key.reveal().text() != "nested-view-secret") ++mismatches;
      }
    });
  }
  for (auto& reader : readers) reader.join();
  CHECK(mismatches == 0);
}

TEST_CASE("a secret reports whether its memory is locked and fills from a callback", "[crypto][secret]") {
  const secret random = secret::random(32);
  CHECK(random.size() == 32);
  CHECK(random.locked());  // the test environment's RLIMIT_MEMLOCK allows a page
  const secret refused = secret::filled(16, [](unsigned char*) { return false; });
  CHECK(refused.empty());
  std::ostringstream printed;
  printed << random.reveal();
  CHECK(printed.str() == "<redacted>");
}
