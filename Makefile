# tinyTorch-C - GNU Make build.
#
#   make              libtinytorch.a and the examples (optimised, -O2)
#   make check        build and run every Check suite in tests/
#   make debug        the same with -O0 -g3 into build-debug/ (for gdb)
#   make sanitize     run the tests under ASan + UBSan (build-sanitize/)
#   make fuzz         libFuzzer harnesses, FUZZ_SECONDS (60) each (tests/fuzz/README.md)
#   make valgrind     run the tests under valgrind memcheck
#   make bench        benchmarks (bench/)
#   make install PREFIX=/usr/local
#
# Switches: OPENMP=0 (no OpenMP), CC=clang, BUILD=dir.

CC      ?= cc
OPENMP  ?= 1
BUILD   ?= build
PREFIX  ?= /usr/local
OPT     ?= -O2
# -std=c11 (not gnu11) also means -ffp-contract=off in gcc: no silent FMA contraction,
# so the same source gives the same floats everywhere. Kernels that want FMA ask for it.
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Wno-unused-parameter \
             -ffp-contract=off -fno-math-errno $(OPT) -g -MMD -MP $(EXTRA_CFLAGS)
ifeq ($(OPENMP),1)
  CFLAGS_ALL += -fopenmp
  LDLIBS_OMP  = -fopenmp
else
  CFLAGS_ALL += -Wno-unknown-pragmas
endif
LDLIBS = $(LDLIBS_OMP) -lm

LIB_SRC  := $(wildcard tinytorch/*.c tinytorch/*/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libtinytorch.a

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/%.o)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lpthread)

# Example programs: examples/<dir>/<prog>.c files that define main(); other .c files in
# the same directory (listed in <dir>_COMMON) are linked into each of that dir's programs.
EXAMPLE_MAINS := $(shell grep -l '^int main' examples/*/*.c 2>/dev/null)
EXAMPLE_BIN   := $(foreach f,$(EXAMPLE_MAINS),$(BUILD)/$(basename $(f)))

.SECONDARY:
.PHONY: all lib examples check debug sanitize valgrind bench install clean tests deps

# `make` alone builds the library and the examples (README's first command).
.DEFAULT_GOAL := all

# Install what the tests need (Check and pkg-config) on Debian/Ubuntu.
deps:
	@if pkg-config --exists check 2>/dev/null; then echo "deps: Check is installed"; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq check pkg-config; fi
all: lib examples

lib: $(LIB)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itinytorch -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(CHECK_CFLAGS) -Itinytorch -Itests -c $< -o $@

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TEST_LIB_OBJ) $(LIB)
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

# every non-main .c in an example directory is shared by that directory's programs
example_common = $(filter-out $(EXAMPLE_MAINS),$(wildcard $(dir $(1))*.c))
# (a function, so that no '%' in the rule below is taken for the stem: $$* is the stem)
example_objs = $(patsubst %.c,$(BUILD)/%.o,$(call example_common,examples/$(1).c))
.SECONDEXPANSION:
$(BUILD)/examples/%: examples/%.c $$(call example_objs,$$*) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itinytorch -o $@ $< $(filter %.o,$^) $(LIB) $(LDLIBS)

examples: $(EXAMPLE_BIN)

tests: $(TEST_BIN)

# Each suite is its own program; run them all and print one closing line of totals.
check: lib examples $(TEST_BIN)
	@TT_BUILD=$(BUILD) TT_TEST_ENV="$(TEST_ENV)" TT_TEST_PREFIX="$(TEST_PREFIX)" tests/run_suites.sh $(TEST_BIN)

debug:
	$(MAKE) BUILD=build-debug OPT="-O0 -g3" all tests

sanitize:
	$(MAKE) BUILD=build-sanitize OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDLIBS_OMP="-fopenmp -fsanitize=address,undefined" \
	  TEST_ENV="ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1" check

valgrind:
	$(MAKE) BUILD=build-valgrind OPT="-O1" OPENMP=0 \
	  TEST_ENV="CK_FORK=no" TEST_PREFIX="valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect" check

# BENCH_CONFIGS="toy small medium", BENCH_THREADS="1 2", BENCH_TORCH=0: see bench/README.md
bench: lib examples
	@$(MAKE) --no-print-directory -C bench BUILD=$(abspath $(BUILD)) CC=$(CC) OPENMP=$(OPENMP)

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/tinytorch $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	cd tinytorch && for h in $$(find . -name '*.h' ! -name internal.h); do \
	  install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/tinytorch/$$h; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@OMP@|$(LDLIBS_OMP)|' tinytorch.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tinytorch.pc
	install -D -m 644 tinytorch/gdb/tinytorch-gdb.py $(DESTDIR)$(PREFIX)/share/tinytorch/tinytorch-gdb.py

clean:
	rm -rf build build-debug build-sanitize build-valgrind

# ---- fuzzing (tests/fuzz/README.md) ---------------------------------------------------
# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="json safetensors"]: build every harness
# tests/fuzz/fuzz_<name>.c with clang -fsanitize=fuzzer,address,undefined into
# $(BUILD)-fuzz/ and run each for FUZZ_SECONDS on tests/fuzz/corpus/<name>/ and
# tests/fuzz/regressions/<name>/ (new inputs go to $(BUILD)-fuzz/fuzz/corpus-<name>/,
# crashes to $(BUILD)-fuzz/fuzz/crash-<name>-*). `make check` replays both directories.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_FLAGS   ?= -close_fd_mask=3 -max_len=4096 -timeout=10 -rss_limit_mb=2048
FUZZ_ALL     := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_EX_OBJ   = $(BUILD)/examples/deepseek/flags.o $(BUILD)/examples/deepseek/corpus.o
.PHONY: fuzz fuzz-build
fuzz:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)-fuzz CC=$(FUZZ_CC) OPENMP=0 \
	  OPT="-O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
	  FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz-build
	@for n in $(FUZZ_TARGETS); do \
	  d=$(BUILD)-fuzz/fuzz; mkdir -p $$d/corpus-$$n tests/fuzz/corpus/$$n tests/fuzz/regressions/$$n; \
	  dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	  echo "== fuzz_$$n for $(FUZZ_SECONDS) s"; \
	  $$d/fuzz_$$n $(FUZZ_FLAGS) $$dict -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$$d/crash-$$n- $$d/corpus-$$n tests/fuzz/corpus/$$n \
	    tests/fuzz/regressions/$$n || { echo "fuzz_$$n FAILED: the input is in $$d/crash-$$n-*;" \
	    "copy it to tests/fuzz/regressions/$$n/"; exit 1; }; \
	done
fuzz-build: $(foreach n,$(FUZZ_TARGETS),$(BUILD)/fuzz/fuzz_$(n))
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_EX_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer -Itinytorch -o $@ $< $(FUZZ_EX_OBJ) $(LIB) $(LDLIBS)

# Header dependencies (-MMD) of every object and program, so that a changed header
# rebuilds everything that includes it: the library, the tests and their helper, the
# examples and the objects they share (a stale object would still link, with the old
# struct layouts).
EXAMPLE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(EXAMPLE_MAINS),$(wildcard examples/*/*.c)))
-include $(LIB_OBJ:.o=.d) $(TEST_BIN:=.d) $(TEST_LIB_OBJ:.o=.d) \
         $(EXAMPLE_OBJ:.o=.d) $(EXAMPLE_BIN:=.d)

# Documentation checks (part of make check): the tutorials quote what their companion
# programs print (tests/check_tutorials.sh), every public symbol is in docs/api.md
# (tests/check_api_docs.sh), and the gdb pretty-printer works on a -O0 -g3 build of
# examples/tutorials/t08_gdb (tests/test_gdb.sh; TT_SKIP_GDB=1 skips it without gdb).
.PHONY: check-docs
check: check-docs
check-docs: examples
	@sh tests/check_tutorials.sh $(BUILD)
	@sh tests/check_api_docs.sh
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/gdb OPT="-O0 -g3" EXTRA_CFLAGS= \
	  LDLIBS_OMP="$(LDLIBS_OMP:-fsanitize%=)" $(BUILD)/gdb/examples/tutorials/t08_gdb >/dev/null
	@sh tests/test_gdb.sh $(BUILD)/gdb/examples/tutorials/t08_gdb

# Soak benchmark (bench/soak.c): train_toy for SOAK_STEPS steps (20000; about 8-10 minutes
# on one core), held-out loss, checkpoint and log every 1000; its resident memory must grow
# under 1% after the warm-up and its open descriptors stay the same. SOAK_ARGS go to train_toy.
SOAK_STEPS ?= 20000
SOAK_ARGS  ?=
.PHONY: soak
soak: $(BUILD)/examples/deepseek/train_toy $(BUILD)/bench/soak
	$(BUILD)/bench/soak --bin $(BUILD)/examples/deepseek/train_toy --steps $(SOAK_STEPS) -- $(SOAK_ARGS)
$(BUILD)/bench/soak: bench/soak.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $<
