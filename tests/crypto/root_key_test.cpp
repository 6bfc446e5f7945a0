// The file root key provider: the key file's format and permissions, its id, wrap and unwrap.
#include <catch2/catch.hpp>

#include "crypto/root_key.hpp"
#include "tests/support/test_keys.hpp"

using namespace bankworker;
using crypto::root_key_error;
using crypto::root_key_failure;

namespace {

root_key_failure failure_loading(const std::filesystem::path& path) {
  try {
    crypto::file_root_key::load(path);
  } catch (const root_key_error& error) {
    CHECK_THAT(error.what(), !Catch::Contains(std::string(test::test_root_key_hex)));
    return error.failure();
  }
  FAIL("the key loaded");
  return root_key_failure::unavailable;
}

}  // namespace

TEST_CASE("a root key file of 64 hex digits loads and has a stable id that reveals nothing", "[crypto][root_key]") {
  const test::root_key_file file;
  const auto key = crypto::file_root_key::load(file.path());
  CHECK(key->key_id() == "file:f9caaf3ea37ddee2");
  CHECK(key->key_id().find(std::string(test::test_root_key_hex).substr(0, 8)) == std::string::npos);
  const test::root_key_file other(test::other_root_key_hex);
  CHECK(crypto::file_root_key::load(other.path())->key_id() != key->key_id());
}

TEST_CASE("unusable root key files are refused with the reason", "[crypto][root_key]") {
  SECTION("readable by others") {
    const test::root_key_file file(test::test_root_key_hex, 0644);
    CHECK(failure_loading(file.path()) == root_key_failure::unusable_key);
  }
  SECTION("not hex") {
    const test::root_key_file file(std::string(64, 'z'));
    CHECK(failure_loading(file.path()) == root_key_failure::unusable_key);
  }
  SECTION("too short") {
    const test::root_key_file file(test::test_root_key_hex.substr(0, 62));
    CHECK(failure_loading(file.path()) == root_key_failure::unusable_key);
  }
  SECTION("missing") {
    CHECK(failure_loading("/nonexistent/bankworker/root-key") == root_key_failure::unusable_key);
  }
}

TEST_CASE("a key wrapped by the root key unwraps only with the same associated data and root key",
          "[crypto][root_key]") {
  const test::root_key_file file;
  const test::root_key_file other_file(test::other_root_key_hex);
  const auto root = crypto::file_root_key::load(file.path());
  const auto other = crypto::file_root_key::load(other_file.path());
  const crypto::secret kek = crypto::secret::random(32);
  const auto tenant = *core::uuid::parse("0d7f6e2a-3b1c-4e5d-8f90-a1b2c3d4e5f6");
  const crypto::bytes aad = crypto::tenant_key_associated_data(tenant, 3, root->key_id());
  const crypto::bytes wrapped = root->wrap(kek, aad);

  CHECK(root->unwrap(wrapped, aad).equals(kek));
  CHECK_THROWS_AS(root->unwrap(wrapped, crypto::tenant_key_associated_data(tenant, 4, root->key_id())), root_key_error);
  CHECK_THROWS_AS(other->unwrap(wrapped, aad), root_key_error);
  crypto::bytes tampered = wrapped;
  tampered.back() ^= 1;
  CHECK_THROWS_AS(root->unwrap(tampered, aad), root_key_error);
}

TEST_CASE("a root key ring wraps with its primary and unwraps with any key by id", "[crypto][root_key]") {
  const test::root_key_file file;
  const test::root_key_file other_file(test::other_root_key_hex);
  crypto::root_key_ring ring(crypto::file_root_key::load(other_file.path()));
  ring.add_previous(crypto::file_root_key::load(file.path()));
  const std::string previous_id = crypto::file_root_key::load(file.path())->key_id();
  CHECK(ring.primary().key_id() != previous_id);
  CHECK(ring.find(previous_id).key_id() == previous_id);
  CHECK_THROWS_MATCHES(ring.find("file:ffffffffffffffff"), root_key_error,
                       Catch::Predicate<root_key_error>(
                           [](const root_key_error& e) { return e.failure() == root_key_failure::unknown_key_id; }));
}
