# fdguard: LD_PRELOAD shim that keeps servers alive at descriptor exhaustion.
#   make                  build/libfdguard.so
#   make test             bats suites (SANITIZE=address|thread|undefined for sanitizer builds)
#   make bench [QUICK=1]  side-by-side benchmarks
#   make demo             the EMFILE spin, without and with the shim
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

.PHONY: all helpers benches test bench demo install clean format check-format lint

all: $(LIB)

$(BUILD)/obj/%.o: shim/%.c shim/*.h Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(SHIM_OBJ) shim/fdguard.map
	$(CC) $(CFLAGS) -o $@ $(SHIM_OBJ) $(LDFLAGS)

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
test: $(LIB) helpers
ifeq ($(SANITIZE),)
	FDG_BUILD=$(abspath $(BUILD)) $(BATS) --tap $(SUITES)
else
	FDG_BUILD=$(abspath $(BUILD)) FDG_SANITIZE=$(SANITIZE) $(SAN_ENV) $(BATS) --tap $(SAN_SUITES)
endif

bench: $(LIB) helpers benches
	FDG_BUILD=$(abspath $(BUILD)) QUICK=$(QUICK) tests/bench/run

demo: $(LIB) helpers
	FDG_BUILD=$(abspath $(BUILD)) scripts/demo

# fdguard flood runs the flood client, installed next to the library.
install: $(LIB) $(BUILD)/tests/flood
	install -d $(DESTDIR)$(PREFIX)/lib/fdguard $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/fdguard/libfdguard.so
	install -m 0755 $(BUILD)/tests/flood $(DESTDIR)$(PREFIX)/lib/fdguard/flood
	install -m 0755 scripts/fdguard $(DESTDIR)$(PREFIX)/bin/fdguard

format:
	clang-format -i shim/*.c shim/*.h tests/helpers/*.c tests/helpers/*.h

check-format:
	clang-format --dry-run -Werror shim/*.c shim/*.h tests/helpers/*.c tests/helpers/*.h

lint:
	shellcheck $(wildcard scripts/fdguard scripts/demo .ci/run tests/bench/run tests/*.bash)

clean:
	rm -rf build
