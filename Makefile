# Conduit - one hand-written GNU Makefile.
#
#   make            build/libconduit.a, build/libconduit.so, build/conduit
#   make run        install missing Debian packages, build, start on 127.0.0.1:8080
#   make test       install what the tests need, build, run unit + integration tests
#   make unit       unit tests only
#   make sanitize   the whole test suite under AddressSanitizer + UBSan
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (clang)
#
# Knobs: SANITIZE=address,undefined | thread, OPT="-O0 -g", CC=clang.

CC       ?= cc
OPT      ?= -O2 -g
SANITIZE ?=
PYTHON   ?= /usr/bin/python3
FUZZ_SECONDS ?= 60
VERSION  := 0.1.0

ifeq ($(SANITIZE),)
BUILD    ?= build
else
BUILD    ?= build/sanitize-$(subst $(comma),-,$(SANITIZE))
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
endif
comma := ,

PKGS     := openssl zlib yaml-0.1
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lssl -lcrypto -lz)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wwrite-strings -Wpointer-arith -Wformat=2 -Wimplicit-fallthrough -Wvla \
        -Wundef -Wno-missing-field-initializers
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer -fvisibility=hidden \
              -fPIC $(WARN) $(OPT) $(SAN_FLAGS) -Iinclude -iquote src \
              -DCONDUIT_VERSION='"$(VERSION)"' $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(SAN_FLAGS) $(LDFLAGS)
LIBS := $(PKG_LIBS) -lpthread -lm

LIB_SRCS  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJS  := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)

.PHONY: all run test check unit integration sanitize tsan fuzz deps deps-test clean bench examples

all: $(BUILD)/libconduit.a $(BUILD)/libconduit.so $(BUILD)/conduit $(BUILD)/conduit-bench

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h include/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj $(BUILD)/tests build/fuzz:
	mkdir -p $@

$(BUILD)/libconduit.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libconduit.so: $(LIB_OBJS)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(BUILD)/conduit: src/main.c $(BUILD)/libconduit.a
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/libconduit.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/test.h $(BUILD)/libconduit.a | $(BUILD)/tests
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $< $(BUILD)/libconduit.a $(LIBS)

EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/examples/%)

examples: $(EXAMPLE_BINS)

# Examples use only the public header, as an embedding program would.
$(BUILD)/examples/%: examples/%.c include/conduit.h $(BUILD)/libconduit.a
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SAN_FLAGS) -Iinclude $(LDFLAGS_ALL) \
	  -o $@ $< $(BUILD)/libconduit.a $(LIBS) -ljansson

deps:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test

run: deps all
	$(BUILD)/conduit

unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS)

integration: all examples
	@CONDUIT_BIN=$(abspath $(BUILD)/conduit) CONDUIT_EXAMPLES=$(abspath $(BUILD)/examples) \
	  CONDUIT_SANITIZE=$(SANITIZE) \
	  scripts/run-integration.sh $(PYTHON)

test: deps-test
	@$(MAKE) --no-print-directory all examples
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration

check: test

# The cross-thread pieces (MPSC queue, loop posts, the hub) under TSan.
TSAN_TESTS := test_mpsc test_loop test_hub
tsan:
	@$(MAKE) --no-print-directory SANITIZE=thread OPT="-O1 -g" \
	  $(TSAN_TESTS:%=build/sanitize-thread/tests/%) build/sanitize-thread/conduit
	@scripts/run-unit.sh $(TSAN_TESTS:%=build/sanitize-thread/tests/%)
	@CONDUIT_BIN=$(abspath build/sanitize-thread/conduit) CONDUIT_SANITIZE=thread \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_hub.py

sanitize:
	@$(MAKE) --no-print-directory test SANITIZE=address,undefined OPT="-O1 -g"

build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS) $(wildcard src/*.h) | build/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -Iinclude -iquote src $(PKG_CFLAGS) -DCONDUIT_VERSION='"$(VERSION)"' \
	  -o $@ $< $(LIB_SRCS) $(LIBS)

# The JSON fuzzer checks the reader against jansson's verdict.
build/fuzz/fuzz_json: LIBS += -ljansson

fuzz: $(FUZZ_BINS)
	@scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

clean:
	rm -rf build

# ---------------------------------------------------------------------------
# conduit-bench: the load generator.  tools/conduit-bench.c is the entry
# point; tools/bench_*.c are its modules (worker loop, client framing,
# histogram).  Links the library for the codec helpers (ws.h, upgrade.h).
# ---------------------------------------------------------------------------
BENCH_SRCS := tools/conduit-bench.c $(wildcard tools/bench_*.c)

$(BUILD)/conduit-bench: tools/conduit-bench.c $(BUILD)/libconduit.a \
                        $(wildcard tools/bench_*.c tools/bench_*.h)
	$(CC) $(CFLAGS_ALL) -Itools $(LDFLAGS_ALL) -o $@ $(BENCH_SRCS) \
	  $(BUILD)/libconduit.a $(LIBS)

# ---------------------------------------------------------------------------
# make bench: Conduit beside npm ws and Debian's libwebsockets, the same loads
# against each, one core each (bench/run.sh; 8-10 minutes on 2 cores).
# Installs what it needs; writes bench/results/ and docs/performance.md.
# ---------------------------------------------------------------------------
bench: deps all
	@bench/run.sh
