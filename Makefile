# promptgate: plain GNU make. Each program folder holds a module.mk that
# adds its sources, binaries and unit tests; this file holds the rules.
#
#   make [all]      build bin/promptgate, bin/mockllm and the other programs
#   make test       install missing packages, build, run unit + integration
#   make run        install missing packages, build, start mockllm + gateway
#   make bench      measure gateway vs mockllm direct vs nginx (wrk)
#   make asan       build with ASan/UBSan/LSan into build/asan and run tests
#   make soak       SOAK_SECONDS=600 of mixed load; memory and fds must stay flat
#   make fuzz       build the libFuzzer targets (clang) into build/fuzz and
#                   run each for FUZZ_SECONDS (30) on its tests/fuzz corpus
#   make install    PREFIX=/usr/local DESTDIR= (SYSCONFDIR, SYSTEMDDIR)
#   make clean
#
# WERROR=1 turns warnings into errors (CI sets it).

PREFIX  ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
SYSTEMDDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
CC      ?= cc
PYTHON  ?= /usr/bin/python3
OPT     ?= -O2
BUILD   ?= build
BIN     ?= bin
SAN     ?=

WARNINGS := -Wall -Wextra -Wstrict-prototypes -Wwrite-strings \
            -Wformat-security -Wvla
ifeq ($(WERROR),1)
WARNINGS += -Werror
endif
ifeq ($(CI),true)
WARNINGS += -Werror
endif

PKGS       := libevent libevent_openssl libevent_pthreads libcurl jansson sqlite3 openssl hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=gnu11 $(WARNINGS) $(CFLAGS) $(SAN) $(PKG_CFLAGS) \
             -D_GNU_SOURCE -I. -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SAN)
LDLIBS   += $(PKG_LIBS) -lm -lpthread

PROGRAMS   :=
UNIT_TESTS :=
LIBS       :=

# objs: map source files to object files under $(BUILD)
objs = $(patsubst %.c,$(BUILD)/%.o,$(1))

.PHONY: all test unit integration run bench asan tsan tsan-unit install clean deps fuzz soak
all:

include $(sort $(wildcard */module.mk */*/module.mk))

all: $(PROGRAMS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BIN)/%:
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

$(BUILD)/tests/test_%:
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS) -lcmocka

deps:
	@contrib/deps.sh

# Unit tests: each cmocka binary prints its own summary; integration: pytest
# starts redis-server, mockllm and promptgate itself on free ports.
unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

integration: $(PROGRAMS)
	PROMPTGATE_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration

run: deps
	@$(MAKE) --no-print-directory all
	@contrib/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@contrib/bench/bench.sh
bench-all: deps all $(BENCH_TOOLS) ; @contrib/bench/bench.sh && contrib/bench/cache.sh && contrib/bench/streams.sh && contrib/bench/peers.sh

asan:
	@contrib/deps.sh
	@$(MAKE) --no-print-directory BUILD=build/asan BIN=build/asan/bin OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    all unit integration

# ThreadSanitizer: the threaded unit tests (TSAN_UNIT_TESTS, named by the
# modules' module.mk) and the worker-thread integration tests against a
# TSan build of the programs (the fixtures fail a test on any report)
TSAN_SAN := -fsanitize=thread -fno-omit-frame-pointer
tsan-unit:
	@$(MAKE) --no-print-directory BUILD=build/tsan BIN=build/tsan/bin OPT=-O1 \
	    SAN="$(TSAN_SAN)" $(addprefix build/tsan/tests/,$(TSAN_UNIT_TESTS))
	@set -e; for t in $(TSAN_UNIT_TESTS); do echo "== tsan $$t"; \
	    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" build/tsan/tests/$$t; done

tsan:
	@contrib/deps.sh
	@$(MAKE) --no-print-directory BUILD=build/tsan BIN=build/tsan/bin OPT=-O1 \
	    SAN="$(TSAN_SAN)" all
	@$(MAKE) --no-print-directory tsan-unit
	PROMPTGATE_BIN=$(abspath build/tsan/bin) TSAN_OPTIONS="report_signal_unsafe=0" \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_gateway_workers.py \
	    tests/integration/test_gateway_reload_bar.py

# tests/fuzz/module.mk holds the targets and their rules; the project's
# objects get the fuzzer's coverage hooks, the targets link libFuzzer
fuzz:
	@contrib/deps.sh
	@$(MAKE) --no-print-directory BUILD=build/fuzz BIN=build/fuzz/bin OPT=-O1 CC=clang \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    fuzz-run

# A steady mixed load for SOAK_SECONDS: RSS and descriptors must end
# within 5% of their values after the warm-up, nothing lost, no crash.
SOAK_SECONDS ?= 600
soak: all
	@mkdir -p results
	PROMPTGATE_BIN=$(abspath $(BIN)) $(PYTHON) tests/soak/soak.py --seconds $(SOAK_SECONDS) \
	    --json results/soak-$$(date -u +%Y%m%dT%H%M%SZ).json

# Binaries (migrations are built in), the example config (an existing one
# is never overwritten), the systemd unit with this prefix's paths, the
# logrotate snippet and the docs.
install: $(PROGRAMS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/promptgate \
	    $(DESTDIR)$(PREFIX)/share/doc/promptgate $(DESTDIR)$(SYSCONFDIR)/promptgate \
	    $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 conf/promptgate.json $(DESTDIR)$(PREFIX)/share/promptgate/
	test -e $(DESTDIR)$(SYSCONFDIR)/promptgate/promptgate.json || \
	    install -m 640 conf/promptgate.json $(DESTDIR)$(SYSCONFDIR)/promptgate/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    contrib/systemd/promptgate.service >$(DESTDIR)$(SYSTEMDDIR)/promptgate.service
	chmod 644 $(DESTDIR)$(SYSTEMDDIR)/promptgate.service
	install -m 644 contrib/logrotate/promptgate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/promptgate
	install -m 644 README.md $(DESTDIR)$(PREFIX)/share/doc/promptgate/

clean:
	rm -rf $(BUILD) $(BIN)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
