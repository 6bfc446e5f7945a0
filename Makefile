# bankworker: the two commands (contract) are `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps), configures, builds, then does its job.
#
#   make build   release build in build/release
#   make test    ASan+UBSan build in build/test, private PostgreSQL, every test (ctest)
#   make demo    release build, private PostgreSQL, the end-to-end demo
#   make run     release build, private PostgreSQL, migrate, then `bankworker run`
#   make bench   release build, every benchmark in bench/ (each prints figures; last line JSON)
#   make install binary, systemd units and an example settings file (PREFIX, DESTDIR)
#   make clean   remove the build folders (the private cluster stays; scripts/pg destroy removes it)

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
RELEASE_DIR := build/release
TEST_DIR := build/test
CTEST_ARGS ?=

PREFIX ?= /usr/local
SYSTEMD_DIR ?= /etc/systemd/system

.PHONY: deps build test demo run bench clean install pg-start pg-stop

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS)

$(TEST_DIR)/CMakeCache.txt:
	@cmake -S . -B $(TEST_DIR) -DCMAKE_BUILD_TYPE=Debug -DBW_SANITIZE=address,undefined >/dev/null

test: deps $(TEST_DIR)/CMakeCache.txt
	@cmake --build $(TEST_DIR) -j $(JOBS)
	@url=$$(scripts/pg start) && \
	  BANKWORKER_TEST_DATABASE_URL="$${BANKWORKER_TEST_DATABASE_URL:-$$url}" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(TEST_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	@scripts/demo $(RELEASE_DIR)/worker/bankworker

run: build
	@url=$$(scripts/pg start) && export BANKWORKER_DATABASE_URL="$${BANKWORKER_DATABASE_URL:-$$url}" && \
	  $(RELEASE_DIR)/worker/bankworker migrate && exec $(RELEASE_DIR)/worker/bankworker run

bench: deps
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF -DBW_BENCH=ON >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS)
	@url=$$(scripts/pg start) && export BANKWORKER_DATABASE_URL="$${BANKWORKER_DATABASE_URL:-$$url}" && \
	  for bench in $(RELEASE_DIR)/bench/*_bench; do echo "== $$bench"; $$bench || exit 1; done

clean:
	rm -rf build

# Binary, units and an example settings file (never overwriting an existing one).
install: build
	install -D -m 0755 $(RELEASE_DIR)/worker/bankworker $(DESTDIR)$(PREFIX)/bin/bankworker
	install -D -m 0644 systemd/bankworker.service $(DESTDIR)$(SYSTEMD_DIR)/bankworker.service
	install -D -m 0644 systemd/bankworker-migrate.service $(DESTDIR)$(SYSTEMD_DIR)/bankworker-migrate.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/bankworker/README.md
	install -d -m 0750 $(DESTDIR)/etc/bankworker
	test -e $(DESTDIR)/etc/bankworker/bankworker.env || \
	  install -m 0640 systemd/bankworker.env.example $(DESTDIR)/etc/bankworker/bankworker.env

pg-start:
	@scripts/pg start
pg-stop:
	@scripts/pg stop
