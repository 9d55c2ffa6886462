# latentd — build, test, run, bench.  See README.md.
#
#   make            build build/latentd
#   make deps       install missing Debian packages for run and test (idempotent)
#   make test       every Check suite plain, the API contract against the
#                   responses they got (test-contract), the suites again
#                   under ASan+UBSan, each fuzz target briefly on its seed
#                   corpus (fuzz-smoke), the web page in a real browser (test-web)
#   make fuzz       the libFuzzer targets (tests/fuzz/) for FUZZ_SECONDS each
#   make run        build and start the daemon on 127.0.0.1:8080
#   make run-cluster  nginx on 127.0.0.1:8080 and REPLICAS (2) daemons behind it
#   make test-cluster nginx and two replicas on loopback (tests/cluster/)
#   make mpi        build/latentd-mpi: `mpirun -np K build/latentd-mpi train ...`
#   make bench-mpi  training samples/s with 1 and 2 MPI ranks
#   make bench      training throughput vs PyTorch
#   make models     retrain the shipped default models
#   make soak       every route under wrk for SOAK_SECONDS (600): RSS and errors

CC      ?= gcc
PKGS    := openblas libcjson libpng zlib libmicrohttpd
CFLAGS  ?= -O2 -g -fno-math-errno -ftree-vectorize
# pkg-config's answers are read when a recipe runs, not when this file is read:
# on a fresh machine `make run` / `make test` install the packages first (deps),
# so a value taken at parse time would be empty (recursive `=`, not `:=`).
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -pthread \
           -Iinclude $(PKG_CFLAGS)
PKG_CFLAGS   = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS       = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
TEST_LDLIBS  = $(shell pkg-config --libs check 2>/dev/null) -lcurl
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# what `make run` needs: the compiler, the libraries and the training data
DEB_PKGS := build-essential pkg-config libopenblas-dev libcjson-dev libpng-dev zlib1g-dev \
            libmicrohttpd-dev curl dataset-fashion-mnist libjs-chart.js
# what `make run-cluster` needs on top of DEB_PKGS (and `make test-cluster`)
CLUSTER_PKGS := nginx
# what `make test` needs on top (Check, libcurl for the test client, promtool,
# a browser and WebDriver for the web page's test, clang for the fuzz targets)
TEST_PKGS := check libcurl4-openssl-dev prometheus chromium chromium-driver python3-selenium \
             clang python3-jsonschema nodejs $(CLUSTER_PKGS) openmpi-bin libopenmpi-dev
# only for `make bench` / `make bench-serve` (the PyTorch and FastAPI peers, wrk)
BENCH_PKGS := wrk python3-torch python3-fastapi python3-uvicorn python3-numpy python3-pil
# only for `make soak` (wrk drives the daemon; python3 writes the test PNG)
SOAK_PKGS := wrk python3

PREFIX  ?= /usr/local
DESTDIR ?=

LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
TEST_SRC := $(filter-out tests/check_main.c,$(wildcard tests/check_*.c))
# helpers shared by several suites (no suite_*() in them): tests/tu_*.c
TEST_UTIL_SRC := $(wildcard tests/tu_*.c)
TEST_UTIL_HDRS := tests/testutil.h $(wildcard tests/tu_*.h)
HDRS     := $(wildcard include/latentd/*.h src/*.h)
# the web page, embedded in the binary (src/web.c): web/ and Debian's Chart.js
WEB_FILES := $(sort $(wildcard web/*))
CHARTJS  := /usr/share/javascript/chart.js/chart.min.js
# the API's description, embedded beside them and served at /openapi.json
OPENAPI  := docs/openapi.json

.PHONY: all deps deps-run deps-bench deps-soak soak test test-plain test-asan test-web test-contract run models bench \
        deps-cluster test-cluster run-cluster \
        bench-serve install clean fixtures fuzz fuzz-build fuzz-smoke mpi mpi-if-present bench-mpi

all: build/latentd

# ---- dependencies -----------------------------------------------------------
deps-bench: PKGS_WANTED = $(DEB_PKGS) $(BENCH_PKGS)
deps-bench: deps-install
deps: PKGS_WANTED = $(DEB_PKGS) $(TEST_PKGS)
deps: deps-install
deps-run: PKGS_WANTED = $(DEB_PKGS)
deps-run: deps-install
deps-cluster: PKGS_WANTED = $(DEB_PKGS) $(CLUSTER_PKGS)
deps-cluster: deps-install
deps-soak: PKGS_WANTED = $(DEB_PKGS) $(SOAK_PKGS)
deps-soak: deps-install
.PHONY: deps-install
deps-install:
	@missing=$$(for p in $(PKGS_WANTED); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "deps: installing $$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing)) >/dev/null; \
	  else echo "deps: missing packages; run: sudo apt-get install -y $$missing"; exit 1; fi; \
	fi

# ---- build (plain in build/, sanitized in build/asan/) ----------------------
# nn.c's activation and loss loops select with float comparisons, which GCC
# turns into vector blends only when it may assume they do not trap; IEEE
# results are unchanged (only exception flags, which nothing reads)
build/nn.o build/asan/nn.o: CFLAGS += -fno-trapping-math
build/%.o: src/%.c $(HDRS) | build
	$(CC) $(CFLAGS) -c $< -o $@
build/asan/%.o: src/%.c $(HDRS) | build/asan
	$(CC) $(CFLAGS) $(SAN) -c $< -o $@

# the page's files as one generated C file (.incbin reads them when it is compiled)
build/web_files.c: scripts/embed-web.sh $(WEB_FILES) $(OPENAPI) $(wildcard $(CHARTJS)) | build
	scripts/embed-web.sh $@ $(abspath $(WEB_FILES) $(OPENAPI)) $(CHARTJS)
build/web_files.o: build/web_files.c src/web_impl.h
	$(CC) $(CFLAGS) -Isrc -c $< -o $@
build/asan/web_files.o: build/web_files.c src/web_impl.h | build/asan
	$(CC) $(CFLAGS) $(SAN) -Isrc -c $< -o $@

build/liblatentd.a: $(patsubst src/%.c,build/%.o,$(LIB_SRC)) build/web_files.o
	ar rcs $@ $^
build/asan/liblatentd.a: $(patsubst src/%.c,build/asan/%.o,$(LIB_SRC)) build/asan/web_files.o
	ar rcs $@ $^

build/latentd: build/main.o build/liblatentd.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
build/asan/latentd: build/asan/main.o build/asan/liblatentd.a
	$(CC) $(CFLAGS) $(SAN) $^ -o $@ $(LDLIBS)

# One Check runner for all suites; build/suites.h lists every suite_*() found in tests/.
build/suites.h: $(TEST_SRC) | build
	@grep -ho '^Suite \*suite_[a-z0-9_]*(void)' $(TEST_SRC) | sed 's/^Suite \*\(suite_[a-z0-9_]*\)(void)/X(\1)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp
build/check_all: tests/check_main.c $(TEST_SRC) $(TEST_UTIL_SRC) $(TEST_UTIL_HDRS) build/suites.h build/liblatentd.a build/latentd
	$(CC) $(CFLAGS) -Ibuild -Itests -Isrc -DLD_BIN='"build/latentd"' tests/check_main.c $(TEST_SRC) $(TEST_UTIL_SRC) build/liblatentd.a -o $@ $(TEST_LDLIBS) $(LDLIBS)
build/asan/check_all: tests/check_main.c $(TEST_SRC) $(TEST_UTIL_SRC) $(TEST_UTIL_HDRS) build/suites.h build/asan/liblatentd.a build/asan/latentd
	$(CC) $(CFLAGS) $(SAN) -Ibuild -Itests -Isrc -DLD_BIN='"build/asan/latentd"' tests/check_main.c $(TEST_SRC) $(TEST_UTIL_SRC) build/asan/liblatentd.a -o $@ $(TEST_LDLIBS) $(LDLIBS)

build build/asan build/mpi:
	@mkdir -p $@

# ---- MPI (data-parallel training across processes; docs/scaling.md) ---------
# build/latentd-mpi is build/latentd with src/dist.c compiled by mpicc with
# LD_MPI=1: its dist.o, named before the archive, stands in for the plain
# (no-MPI) dist.o inside it.  The plain build never needs MPI.
MPICC ?= mpicc
mpi: build/latentd-mpi
build/mpi/dist.o: src/dist.c $(HDRS) | build/mpi
	$(MPICC) $(CFLAGS) -DLD_MPI=1 -c $< -o $@
build/latentd-mpi: build/main.o build/mpi/dist.o build/liblatentd.a
	$(MPICC) $(CFLAGS) $^ -o $@ $(LDLIBS)
# for `make test`: the dist suite runs build/latentd-mpi, or reports SKIPPED
mpi-if-present:
	@if command -v $(MPICC) >/dev/null && command -v mpirun >/dev/null; then \
	  $(MAKE) --no-print-directory build/latentd-mpi; \
	else echo "mpi: no mpicc/mpirun; the dist suite will report SKIPPED"; fi

# ---- test -------------------------------------------------------------------
# CK_FORK stays on (default): a crashing test is reported, not fatal.
test: deps
	@$(MAKE) --no-print-directory mpi-if-present test-plain test-contract test-asan fuzz-smoke test-web test-cluster

# The plain run records every response its suites get (CONTRACT_LOG) for test-contract.
CONTRACT_LOG := build/contract/responses.jsonl
test-plain: build/check_all
	@echo "== tests (plain) =="
	@mkdir -p build/contract && rm -f $(CONTRACT_LOG)
	LD_CONTRACT_LOG=$(abspath $(CONTRACT_LOG)) ./build/check_all

# The API contract (tests/contract/contract.py): docs/openapi.json lints clean
# with the @redocly/cli that tests/contract/package-lock.json pins (npm ci into
# build/contract/; SKIPPED when the npm registry is out of reach), `latentd
# routes` and the document list the same routes, and every response that
# test-plain recorded validates against the document.
test-contract: build/latentd
	@echo "== API contract (docs/openapi.json) =="
	/usr/bin/python3 tests/contract/contract.py --bin build/latentd --doc $(OPENAPI) \
	  --responses $(CONTRACT_LOG) --npm-dir build/contract

test-asan: build/asan/check_all
	@echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer) =="
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 ./build/asan/check_all

# The web page in Chromium driven by WebDriver (tests/web/test_web.py): once,
# against the plain build.  Screenshots of each stage go to build/screenshots/.
test-web: build/latentd
	@echo "== web page (Chromium + WebDriver) =="
	/usr/bin/python3 tests/web/test_web.py --bin build/latentd --screenshots build/screenshots

# nginx (Debian's) in front of two replicas on loopback, about 15 s: the
# shipped config/nginx/latentd.conf through scripts/run-cluster.sh.
test-cluster: build/latentd
	@echo "== cluster (nginx + 2 replicas) =="
	tests/cluster/test_cluster.sh build/latentd

# ---- fuzz (libFuzzer with ASan+UBSan, clang) --------------------------------
# One target per tests/fuzz/fuzz_<t>.c, seeds in tests/corpus/<t>/.  What a run
# finds goes to build/fuzz/corpus/<t>/ (new inputs) and build/fuzz/ (crashes);
# add a crashing input to tests/corpus/<t>/ with its fix.  fuzz-smoke (part
# of `make test`) is bounded in runs, `make fuzz` in time.  A malloc above
# FUZZ_MALLOC_MB is reported as a crash: no input of a few KiB may ask for it.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_RUNS    ?= 20000
FUZZ_MALLOC_MB ?= 512
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# clang does not define __SANITIZE_ADDRESS__ as gcc does under ASan; the
# sources test it (nn.c's target_clones, which clang 14 cannot link then)
FUZZ_CFLAGS  := -O1 -g -std=c11 -pthread -Iinclude -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -D__SANITIZE_ADDRESS__=1
FUZZ_UTIL    := tests/fuzz/fz_util.c tests/fuzz/fake_http.c
FUZZ_OPTS     = -print_final_stats=1 -malloc_limit_mb=$(FUZZ_MALLOC_MB) -rss_limit_mb=2048 -timeout=10
# tests/fuzz/<t>.dict, when there is one, gives the fuzzer the format's words
FUZZ_DICT     = $$([ -f tests/fuzz/$$t.dict ] && echo -dict=tests/fuzz/$$t.dict)

build/fuzz/%.o: src/%.c $(HDRS) | build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/liblatentd.a: $(patsubst src/%.c,build/fuzz/%.o,$(LIB_SRC))
	ar rcs $@ $^
# fake_http.c stands in for http.o (the archive member is then never pulled in)
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_UTIL) tests/fuzz/fuzz.h tests/tu_tiny.h build/fuzz/liblatentd.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -Itests/fuzz -fsanitize=fuzzer $< $(FUZZ_UTIL) \
	  build/fuzz/liblatentd.a -o $@ $(LDLIBS)
build/fuzz:
	@mkdir -p $@

fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

fuzz-smoke: fuzz-build
	@echo "== fuzz smoke ($(FUZZ_RUNS) runs each) =="
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t && \
	  ./build/fuzz/fuzz_$$t $(FUZZ_OPTS) $(FUZZ_DICT) -runs=$(FUZZ_RUNS) -artifact_prefix=build/fuzz/$$t- \
	    build/fuzz/corpus/$$t tests/corpus/$$t 2>build/fuzz/$$t.log \
	  && echo "fuzz $$t: ok ($$(grep -o 'stat::number_of_executed_units: [0-9]*' build/fuzz/$$t.log | grep -o '[0-9]*$$') runs)" \
	  || { tail -40 build/fuzz/$$t.log; echo "fuzz $$t: FAILED (build/fuzz/$$t.log)"; exit 1; }; \
	done

fuzz: deps fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t && \
	  ./build/fuzz/fuzz_$$t $(FUZZ_OPTS) $(FUZZ_DICT) -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=build/fuzz/$$t- build/fuzz/corpus/$$t tests/corpus/$$t 2>build/fuzz/$$t.log \
	  && echo "fuzz $$t: ok ($$(grep -o 'stat::number_of_executed_units: [0-9]*' build/fuzz/$$t.log | grep -o '[0-9]*$$') runs)" \
	  || { tail -40 build/fuzz/$$t.log; echo "fuzz $$t: FAILED (build/fuzz/$$t.log)"; exit 1; }; \
	done

# ---- run, models, bench, install --------------------------------------------
run: deps-run build/latentd
	@scripts/ensure-models.sh
	./build/latentd serve --config config/latentd.conf

# Ctrl-C stops nginx and every replica; REPLICAS=N for N of them
REPLICAS ?= 2
run-cluster: deps-cluster build/latentd
	@scripts/ensure-models.sh
	scripts/run-cluster.sh $(REPLICAS)

models: deps build/latentd
	scripts/make-models.sh

bench: deps-bench build/latentd
	scripts/bench-train.sh

bench-serve: deps-bench build/latentd build/hostprobe
	scripts/bench-serve.sh

bench-mpi: deps build/latentd-mpi
	scripts/bench-mpi.sh

# scripts/soak.sh documents its other settings (warm-up, connections, limits)
SOAK_SECONDS ?= 600
soak: deps-soak build/latentd
	SOAK_SECONDS=$(SOAK_SECONDS) scripts/soak.sh

build/hostprobe: bench/hostprobe.c | build
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS)

fixtures:
	/usr/bin/python3 tests/reference/make_fixtures.py tests/fixtures
	/usr/bin/python3 tests/reference/make_layer_fixtures.py tests/fixtures
	/usr/bin/python3 tests/reference/make_optim_fixtures.py tests/fixtures

install: build/latentd
	install -D -m 0755 build/latentd $(DESTDIR)$(PREFIX)/bin/latentd
	install -D -m 0644 config/latentd.conf $(DESTDIR)$(PREFIX)/etc/latentd/latentd.conf
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|/usr/local|$(PREFIX)|g' systemd/latentd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/latentd.service
	sed 's|/usr/local|$(PREFIX)|g' systemd/latentd@.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/latentd@.service
	install -D -m 0644 config/nginx/latentd.conf $(DESTDIR)$(PREFIX)/etc/latentd/nginx/latentd.conf
	install -d $(DESTDIR)$(PREFIX)/share/latentd/models
	for f in models/*.safetensors; do [ -f "$$f" ] && install -m 0644 "$$f" $(DESTDIR)$(PREFIX)/share/latentd/models/ || true; done

clean:
	rm -rf build
