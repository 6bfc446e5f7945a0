# bankworker: the two commands (contract) are `make demo` and `make test`. Each installs what is
# missing (scripts/install-deps), configures, builds, then does its job.
#
#   make build   release build in build/release
#   make test    ASan+UBSan build in build/test, private PostgreSQL, every test (ctest)
#   make test-tsan  the suite under ThreadSanitizer (build/tsan)
#   make demo    release build, private PostgreSQL, the end-to-end demo
#   make run     release build, private PostgreSQL, migrate, then `bankworker run`
#   make schema  release build, then db/schema.sql rewritten from the migrations (scripts/dump-schema)
#   make bench   release build, every benchmark in bench/ (each prints figures; last line JSON), and
#                webhook_load against its Node peer (scripts/install-bench-peers installs it)
#   make install binary, systemd units and an example settings file (PREFIX, DESTDIR)
#   make deb     the Debian package in build/release/packages, checked by lintian and installed
#                into a scratch root by tests/package/deb_install_test
#   make fuzz    libFuzzer targets (clang), FUZZ_SECONDS each (default 60)
#   make chaos   the long chaos run (tests/chaos), CHAOS_SECONDS (default 600), in CHAOS_DIR
#   make failover  the failover run (tests/chaos --failover): pg_auto_failover formation, a
#                switchover and a killed primary under load, FAILOVER_SECONDS (default 180),
#                FAILOVER_RUNS times (default 1)
#   make clean   remove the build folders (the private cluster stays; scripts/pg destroy removes it)

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
RELEASE_DIR := build/release
TEST_DIR := build/test
# `make test` runs every test, the 60 s failover run among them (label failover, issue #18);
# CTEST_ARGS="-LE failover" leaves it out, CTEST_ARGS="-L failover" runs it alone.
CTEST_ARGS ?=

PREFIX ?= /usr/local
SYSTEMD_DIR ?= /etc/systemd/system

FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz

.PHONY: deps build test test-tsan demo run schema bench fuzz chaos failover clean install deb pg-start pg-stop

deps:
	@scripts/install-deps

# The compiler's output goes to a log (shown when the build fails), so `make demo` prints one line
# per step rather than a wall of build progress.
build: deps
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
	@echo "building bankworker (release, log in $(RELEASE_DIR)/build.log)"
	@cmake --build $(RELEASE_DIR) -j $(JOBS) >$(RELEASE_DIR)/build.log 2>&1 || { tail -n 40 $(RELEASE_DIR)/build.log; exit 1; }

# The benchmarks are built here too (not run), so that a change which breaks one fails the tests.
$(TEST_DIR)/CMakeCache.txt:
	@cmake -S . -B $(TEST_DIR) -DCMAKE_BUILD_TYPE=Debug -DBW_SANITIZE=address,undefined -DBW_BENCH=ON >/dev/null

test: deps $(TEST_DIR)/CMakeCache.txt
	@cmake --build $(TEST_DIR) -j $(JOBS)
	@url=$$(scripts/pg start) && \
	  BANKWORKER_TEST_DATABASE_URL="$${BANKWORKER_TEST_DATABASE_URL:-$$url}" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(TEST_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The same suite under ThreadSanitizer (issue #8); not part of CI yet.
TSAN_DIR := build/tsan
test-tsan: deps
	@cmake -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DBW_SANITIZE=thread >/dev/null
	@cmake --build $(TSAN_DIR) -j $(JOBS)
	@url=$$(scripts/pg start) && \
	  BANKWORKER_TEST_DATABASE_URL="$${BANKWORKER_TEST_DATABASE_URL:-$$url}" TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --test-dir $(TSAN_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	@scripts/demo $(RELEASE_DIR)/worker/bankworker

run: build
	@url=$$(scripts/pg start) && export BANKWORKER_DATABASE_URL="$${BANKWORKER_DATABASE_URL:-$$url}" && \
	  $(RELEASE_DIR)/worker/bankworker migrate && exec $(RELEASE_DIR)/worker/bankworker run

# db/schema.sql, the schema in one file to read: a scratch database in the private cluster migrated by
# the binary just built, dumped and stripped of noise. Commit it with every new migration (a test
# fails until then).
schema: build
	@scripts/dump-schema $(RELEASE_DIR)/worker/bankworker

# The peers (bench/peers: the Node handler webhook_load --peer node measures bankworker against) are
# installed here by scripts/install-bench-peers, from their committed lock files.
bench: deps
	@scripts/install-bench-peers
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF -DBW_BENCH=ON >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS)
	@url=$$(scripts/pg start) && export BANKWORKER_DATABASE_URL="$${BANKWORKER_DATABASE_URL:-$$url}" && \
	  for bench in $(RELEASE_DIR)/bench/*_bench $(RELEASE_DIR)/bench/webhook_load; do echo "== $$bench"; $$bench || exit 1; done && \
	  echo "== $(RELEASE_DIR)/bench/webhook_load --peer node" && $(RELEASE_DIR)/bench/webhook_load --peer node && \
	  echo "== bench/scope_token_cost" && bench/scope_token_cost $(RELEASE_DIR)/worker/bankworker

# Every libFuzzer target for FUZZ_SECONDS each, seeded from fuzz/corpus/<target>; new inputs go
# to build/fuzz/corpus/<target>. A crash leaves its input in build/fuzz and fails the target.
fuzz: deps
	@CXX=clang++ cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF -DBW_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target stripe_signature_fuzz plaid_sync_page_fuzz plaid_amount_fuzz plaid_webhook_jwt_fuzz redact_fuzz \
	  stripe_event_fuzz envelope_open_fuzz http_request_fuzz
	@for target in stripe_signature_fuzz plaid_sync_page_fuzz plaid_amount_fuzz plaid_webhook_jwt_fuzz redact_fuzz \
	    stripe_event_fuzz envelope_open_fuzz http_request_fuzz; do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$target fuzz/corpus/$$target; \
	  echo "== $$target ($(FUZZ_SECONDS) s)"; \
	  (cd $(FUZZ_DIR) && ./fuzz/$$target -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	     corpus/$$target ../../fuzz/corpus/$$target 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|.*ERROR|SUMMARY)|cov:" | tail -4) || exit 1; \
	done

# The chaos run (tests/chaos/README.md): CHAOS_SECONDS of worker kills, a PostgreSQL restart and
# provider faults under a mixed load, then every invariant checked against the simulators. It
# makes a PostgreSQL cluster of its own. CHAOS_DIR is the build to use (the ASan+UBSan one by
# default); CHAOS_ARGS adds flags (--seed N, --workers W, --tenants T, --keep).
CHAOS_SECONDS ?= 600
CHAOS_DIR ?= $(TEST_DIR)
CHAOS_ARGS ?=
chaos: deps
	@cmake -S . -B $(CHAOS_DIR) -DCMAKE_BUILD_TYPE=Debug -DBW_SANITIZE=address,undefined >/dev/null
	@cmake --build $(CHAOS_DIR) -j $(JOBS) --target chaos_run
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CHAOS_DIR)/tests/chaos/chaos_run --seconds $(CHAOS_SECONDS) $(CHAOS_ARGS)

# The failover run (tests/chaos/README.md, "Failover"; issue #18): a pg_auto_failover monitor,
# primary and synchronous standby of its own (scripts/pg-ha), three workers under the chaos run's
# mixed load, a planned switchover and then the primary's host killed, the chaos invariants, and
# the write gap of each failover. FAILOVER_RUNS repeats it (each run prints its gaps).
FAILOVER_SECONDS ?= 180
FAILOVER_RUNS ?= 1
failover: deps
	@cmake -S . -B $(CHAOS_DIR) -DCMAKE_BUILD_TYPE=Debug -DBW_SANITIZE=address,undefined >/dev/null
	@cmake --build $(CHAOS_DIR) -j $(JOBS) --target chaos_run
	@for run in $$(seq 1 $(FAILOVER_RUNS)); do \
	  echo "== failover run $$run of $(FAILOVER_RUNS)"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(CHAOS_DIR)/tests/chaos/chaos_run --failover --seconds $(FAILOVER_SECONDS) $(CHAOS_ARGS) || exit 1; \
	done

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

# The release build plus the package's install rules (scripts/deb.cmake); lintian must report no
# error, then the package is installed into a scratch root, run and purged.
deb: deps
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF -DBW_DEB=ON >/dev/null
	@echo "building bankworker (release, log in $(RELEASE_DIR)/build.log)"
	@cmake --build $(RELEASE_DIR) -j $(JOBS) --target bankworker bankworker_deb_files >$(RELEASE_DIR)/build.log 2>&1 || \
	  { tail -n 40 $(RELEASE_DIR)/build.log; exit 1; }
	@rm -f $(RELEASE_DIR)/packages/bankworker_*.deb
	@cd $(RELEASE_DIR) && cpack -G DEB >cpack.log 2>&1 || { tail -n 40 cpack.log; exit 1; }
	@deb=$$(ls $(RELEASE_DIR)/packages/bankworker_*.deb) && echo "built $$deb" && \
	  lintian --fail-on error "$$deb" && \
	  tests/package/deb_install_test "$$deb" "$$(sed -n 's/^project(bankworker VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"

pg-start:
	@scripts/pg start
pg-stop:
	@scripts/pg stop
