# fdguard: LD_PRELOAD shim that keeps servers alive at descriptor exhaustion.
#   make                  build/libfdguard.so and the tools' programs (build/flood,
#                         build/statsread)
#   make test             bats suites (SANITIZE=address|thread|undefined for sanitizer builds)
#   make bench [QUICK=1]  side-by-side benchmarks
#   make demo             the EMFILE spin, without and with the shim
#   make fidelity         CPython's own test suites with the shim preloaded (TAP)
#   make install          PREFIX=/usr/local DESTDIR=

CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
OPT      ?= -O2
SANITIZE ?=

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   := -std=gnu11 $(OPT) -g -fPIC -fvisibility=hidden -D_GNU_SOURCE $(WARN) $(EXTRA_CFLAGS)
LDFLAGS  := -shared -Wl,--version-script=shim/fdguard.map -Wl,-z,now -Wl,-z,relro \
            -Wl,--as-needed -Wl,--no-undefined
# x86-64: the library is shadow-stack compatible (under an active shadow stack
# dlopen passes straight through: shim/dlentry.c) and says so whatever the
# toolchain's defaults, so that preloading it never turns a host's CET off.
ifneq ($(filter x86_64-%,$(shell $(CC) -dumpmachine)),)
LDFLAGS  += -Wl,-z,shstk
endif

ifeq ($(SANITIZE),)
BUILD    ?= build
else
BUILD    ?= build/san-$(SANITIZE)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=$(SANITIZE)
endif
# -O0 variant of the shim: the dlopen fidelity tests run against both builds.
ifneq ($(filter -O0,$(OPT)),)
BUILD    := $(BUILD)-O0
endif

SHIM_SRC := $(wildcard shim/*.c)
SHIM_OBJ := $(patsubst shim/%.c,$(BUILD)/obj/%.o,$(SHIM_SRC))
LIB      := $(BUILD)/libfdguard.so

# The programs scripts/fdguard runs (product code, installed with it).
TOOL_SRC := $(wildcard scripts/tools/*.c)
TOOLS    := $(patsubst scripts/tools/%.c,$(BUILD)/%,$(TOOL_SRC))
TOOL_CFLAGS := -std=gnu11 $(OPT) -g -D_GNU_SOURCE $(WARN) $(EXTRA_CFLAGS)
ifneq ($(SANITIZE),)
TOOL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
endif

HELPER_SRC := $(wildcard tests/helpers/*.c)
HELPERS    := $(patsubst tests/helpers/%.c,$(BUILD)/tests/%,$(HELPER_SRC))
HELPER_CFLAGS := -std=gnu11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Werror -pthread $(EXTRA_CFLAGS)
ifneq ($(SANITIZE),)
HELPER_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
endif

BATS      ?= bats
SUITES    ?= $(wildcard tests/*.bats tests/integration/*.bats)
SAN_SUITES ?= tests/accept.bats tests/accept_blocking.bats tests/epoll.bats tests/dlopen.bats
# Leak checks would report the uninstrumented programs the tests also run.
SAN_ENV   := ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
             TSAN_OPTIONS=halt_on_error=1

.PHONY: all helpers benches test bench demo fidelity install clean format check-format lint

all: $(LIB) $(TOOLS)

$(BUILD)/obj/%.o: shim/%.c shim/*.h Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(SHIM_OBJ) shim/fdguard.map
	$(CC) $(CFLAGS) -o $@ $(SHIM_OBJ) $(LDFLAGS)

$(TOOLS): $(BUILD)/%: scripts/tools/%.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(TOOL_CFLAGS) -o $@ $<

$(BUILD)/tests/%: tests/helpers/%.c tests/helpers/*.h Makefile
	@mkdir -p $(dir $@)
	$(CC) $(HELPER_CFLAGS) -o $@ $< -ldl

helpers: $(HELPERS)

BENCH_SRC := $(wildcard tests/bench/*.c)
BENCHES   := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

$(BUILD)/bench/%: tests/bench/%.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(HELPER_CFLAGS) -o $@ $< -ldl

benches: $(BENCHES)

# Under a sanitizer only the suites driven by our own (instrumented) helpers run:
# preloading a sanitizer runtime into packaged servers tests the runtime, not us.
test: $(LIB) $(TOOLS) helpers $(BUILD)/bench/icount
ifeq ($(SANITIZE),)
	FDG_BUILD=$(abspath $(BUILD)) $(BATS) --tap $(SUITES)
else
	FDG_BUILD=$(abspath $(BUILD)) FDG_SANITIZE=$(SANITIZE) $(SAN_ENV) $(BATS) --tap $(SAN_SUITES)
endif

bench: $(LIB) $(TOOLS) helpers benches
	FDG_BUILD=$(abspath $(BUILD)) QUICK=$(QUICK) tests/bench/run

demo: $(LIB) $(TOOLS) helpers
	FDG_BUILD=$(abspath $(BUILD)) scripts/demo

# The system python3 (Debian's libpython3.X-testsuite matches it), not one
# found on PATH: its suites must pass with the shim as they do without.
FIDELITY_PYTHON ?= /usr/bin/python3
FIDELITY_TESTS  ?= test_epoll test_selectors test_os test_subprocess test_ctypes test_poll \
                   test_select test_asyncio
fidelity: $(LIB)
	FDG_BUILD=$(abspath $(BUILD)) PYTHON=$(FIDELITY_PYTHON) tests/fidelity/run $(FIDELITY_TESTS)

# bin/fdguard (the dispatcher) finds its subcommand files in lib/fdguard/tools,
# and the library and the programs it runs in lib/fdguard.
install: $(LIB) $(TOOLS)
	install -d $(DESTDIR)$(PREFIX)/lib/fdguard/tools $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/fdguard/libfdguard.so
	install -m 0755 $(TOOLS) $(DESTDIR)$(PREFIX)/lib/fdguard/
	install -m 0644 scripts/tools/*.bash $(DESTDIR)$(PREFIX)/lib/fdguard/tools/
	install -m 0755 scripts/fdguard $(DESTDIR)$(PREFIX)/bin/fdguard

format:
	clang-format -i shim/*.c shim/*.h scripts/tools/*.c tests/helpers/*.c tests/helpers/*.h

check-format:
	clang-format --dry-run -Werror shim/*.c shim/*.h scripts/tools/*.c tests/helpers/*.c tests/helpers/*.h

# The bats suites at severity warning: bats runs each test in a subshell of
# its own, which shellcheck's info-level SC2030/SC2031 take for lost
# assignments, and SC2016 (info) flags every single-quoted awk or sh program;
# bats' own pitfalls (SC2314: a bare `! cmd` fails nothing) are errors.
lint:
	shellcheck -x $(wildcard scripts/fdguard scripts/tools/*.bash scripts/demo .ci/run \
	    tests/bench/run tests/fidelity/run tests/*.bash)
	shellcheck -x --severity=warning $(wildcard tests/*.bats tests/integration/*.bats \
	    tests/integration/common.bash)

clean:
	rm -rf build
