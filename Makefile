# batchtok - build, test, benchmark, install.
#
#   make            build everything into $(O)/
#   make check      unit, fuzz-corpus, integration and boot tests, then unit and
#                   integration again under ASan+UBSan
#   make boot       the packages installed and booted under systemd (nspawn)
#   make demo       run the daemon against the local fake token service
#   make bench      print performance figures against in-run baselines
#   make install    PREFIX=/usr/local DESTDIR=

VERSION    := 0.3.0
O          ?= build
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANDIR     ?= $(PREFIX)/share/man
MANPAGES   := client/batchtok.1 daemon/batchtokd.conf.5 proto/batchtok-protocol.7 daemon/batchtokd.8
PYTHON     ?= /usr/bin/python3
# Where the Python client goes: the interpreter's own site directory unless
# told (Debian: /usr/lib/python3/dist-packages).
PYTHONDIR  ?= $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
            -Wno-format-truncation
BASE     := -std=gnu11 -D_GNU_SOURCE -fPIC -fstack-protector-strong \
            -DBATCHTOK_VERSION_STRING='"$(VERSION)"'
ifeq ($(SAN),1)
BASE     += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDSAN    := -fsanitize=address,undefined
endif
ALL_CFLAGS = $(BASE) $(WARN) $(CFLAGS) $(CPPFLAGS)

DAEMON_PKGS := libuv libcurl openssl libsystemd jansson inih
DAEMON_CFLAGS = $(shell pkg-config --cflags $(DAEMON_PKGS))
# http-parser ships no pkg-config file.
DAEMON_LIBS   = $(shell pkg-config --libs $(DAEMON_PKGS)) -lhttp_parser

PROTO_SRC  := proto/buf.c proto/msg.c proto/duration.c
CLIENT_LIB_SRC := client/libbatchtok.c client/daemon_conn.c client/watch.c client/status_format.c
# The config and the credential kinds that read its keys, with what they use.
CONFIG_SRC := daemon/identity/config.c daemon/identity/conf_value.c daemon/identity/keyfile.c \
              daemon/identity/credential.c daemon/identity/cred_secret.c \
              daemon/identity/cred_certificate.c daemon/identity/cred_managed_identity.c \
              daemon/identity/cred_federated.c daemon/identity/cred_device_code.c \
              daemon/identity/entra.c daemon/lib/http.c daemon/lib/certificate.c daemon/lib/jwt.c \
              daemon/lib/log.c daemon/lib/secmem.c daemon/lib/fileio.c daemon/lib/pattern.c
DAEMON_SRC := $(CONFIG_SRC) daemon/lib/schedule.c daemon/core/cache.c daemon/lib/attest.c \
              daemon/front/server.c daemon/front/dispatch.c daemon/lib/notify.c \
              daemon/daemon.c daemon/lib/sealed.c daemon/identity/signin.c \
              daemon/front/capability.c daemon/front/sockdiag.c daemon/front/http_in.c daemon/front/compat.c daemon/front/metrics_http.c \
              daemon/lib/usernames.c daemon/core/service.c daemon/lib/clock.c \
              daemon/lib/ratelimit.c daemon/lib/uidcount.c daemon/core/policy.c \
              daemon/lib/unitcount.c daemon/lib/counters.c daemon/core/metrics.c \
              daemon/lib/unixsock.c daemon/lib/peer.c daemon/lib/fdstore.c daemon/core/tokensnap.c \
              daemon/lib/guard.c
UNIT_TESTS := test_buf test_msg test_libbatchtok test_duration test_status_format test_config test_attest \
              test_schedule test_entra test_cache test_jwt test_certificate test_sealed \
              test_capability test_http_in test_usernames test_alloc_failure test_ratelimit \
              test_uidcount test_http test_fileio test_server test_dispatch test_compat test_signin test_reload \
              test_policy test_guard
FUZZERS    := fuzz_frame fuzz_config fuzz_entra fuzz_signin fuzz_http_in fuzz_policy fuzz_tokensnap
# Unit tests of daemon modules link all of them.
DAEMON_TESTS := test_config test_attest test_schedule test_entra test_cache test_jwt test_certificate \
                test_sealed test_capability test_http_in test_usernames test_alloc_failure \
                test_ratelimit test_uidcount test_http test_fileio test_server test_dispatch test_compat test_signin test_reload \
                test_policy

obj = $(patsubst %.c,$(O)/obj/%.o,$(1))

all: $(O)/batchtokd $(O)/batchtok $(O)/libbatchtok.so $(O)/libbatchtok.a $(O)/batchtok.pc

V ?= 0
Q := $(if $(filter 1,$(V)),,@)

# Objects carry the version (BATCHTOK_VERSION_STRING): a new one rebuilds them.
$(O)/.version-$(VERSION):
	@mkdir -p $(O) && rm -f $(O)/.version-* && touch $@

$(O)/obj/%.o: %.c $(O)/.version-$(VERSION)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(if $(filter daemon/% $(DAEMON_TESTS:%=tests/unit/%.c) tests/bench/%,$<),$(DAEMON_CFLAGS)) -MMD -MP -c $< -o $@

$(O)/libbtproto.a: $(call obj,$(PROTO_SRC))
	$(AR) rcs $@ $^

$(O)/libbatchtok.a: $(call obj,$(CLIENT_LIB_SRC) $(PROTO_SRC))
	$(AR) rcs $@ $^

# The shared library exports the batchtok_ API and nothing else.
$(O)/libbatchtok.so: $(call obj,$(CLIENT_LIB_SRC) $(PROTO_SRC)) client/libbatchtok.map
	$(CC) -shared -Wl,-soname,libbatchtok.so.0 -Wl,--version-script=client/libbatchtok.map \
		$(LDSAN) $(LDFLAGS) -o $@ $(call obj,$(CLIENT_LIB_SRC) $(PROTO_SRC))

# Written again by `make install`, so that it names the PREFIX installed to.
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	     -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' client/batchtok.pc.in
$(O)/batchtok.pc: client/batchtok.pc.in
	@mkdir -p $(O)
	$(PC_SED) > $@

# The command links the library statically: it starts as fast as a trivial
# program and does not depend on the .so being installed.
$(O)/batchtok: $(call obj,client/batchtok.c) $(O)/libbatchtok.a
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^

$(O)/batchtokd: $(call obj,daemon/main.c $(DAEMON_SRC)) $(O)/libbtproto.a
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS) -lm

# Unit tests (cmocka): each links the modules it covers.
$(O)/tests/test_buf: $(call obj,tests/unit/test_buf.c) $(O)/libbtproto.a
$(O)/tests/test_msg: $(call obj,tests/unit/test_msg.c) $(O)/libbtproto.a
$(O)/tests/test_duration: $(call obj,tests/unit/test_duration.c) $(O)/libbtproto.a
$(O)/tests/test_status_format: $(call obj,tests/unit/test_status_format.c client/status_format.c) $(O)/libbtproto.a
$(O)/tests/test_guard: $(call obj,tests/unit/test_guard.c daemon/lib/guard.c)
# Includes client/libbatchtok.c to reach its internal request path.
$(O)/tests/test_libbatchtok: $(call obj,tests/unit/test_libbatchtok.c client/daemon_conn.c client/watch.c \
                             client/status_format.c) $(O)/libbtproto.a
$(addprefix $(O)/tests/,$(DAEMON_TESTS)): \
  $(O)/tests/%: $(call obj,tests/unit/%.c $(DAEMON_SRC)) $(O)/libbtproto.a
# Our own allocations go through the test's failing allocator.
$(O)/tests/test_alloc_failure: LDFLAGS += -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup,--wrap=vasprintf,--wrap=secmem_alloc,--wrap=secmem_strndup
# A client that sends the moment its connection is accepted.
$(O)/tests/test_server: LDFLAGS += -Wl,--wrap=accept4
# A kernel without SO_PEERPIDFD, when the test says so.
$(O)/tests/test_attest: LDFLAGS += -Wl,--wrap=getsockopt
# Who owns a TCP connection, and the wall clock, are the test's.
$(O)/tests/test_compat: LDFLAGS += -Wl,--wrap=sockdiag_open,--wrap=sockdiag_tcp_owner,--wrap=clock_wall_now
# The token service, the poll timer and the wall clock are the test's.
$(O)/tests/test_signin: LDFLAGS += -Wl,--wrap=http_submit,--wrap=http_cancel,--wrap=uv_timer_start,--wrap=uv_timer_stop,--wrap=clock_wall_now
$(O)/tests/test_alloc_failure: $(call obj,tests/unit/test_alloc_failure.c $(DAEMON_SRC)) $(O)/libbtproto.a
$(O)/tests/%:
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS) -lcmocka -lm

# Fuzz targets: built with clang's libFuzzer. Without it each target links a
# driver that replays its corpus, so the corpus runs as a test everywhere.
FUZZ_CC ?= clang
FUZZ_FLAGS := -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
              -DBATCHTOK_VERSION_STRING='"$(VERSION)"'
$(O)/fuzz/fuzz_frame: tests/fuzz/fuzz_frame.c $(PROTO_SRC)
$(O)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(CONFIG_SRC) $(PROTO_SRC)
$(O)/fuzz/fuzz_entra: tests/fuzz/fuzz_entra.c daemon/identity/entra.c daemon/lib/http.c daemon/lib/jwt.c daemon/lib/log.c daemon/lib/secmem.c $(PROTO_SRC)
$(O)/fuzz/fuzz_signin: tests/fuzz/fuzz_signin.c $(DAEMON_SRC) $(PROTO_SRC)
$(O)/fuzz/fuzz_tokensnap: tests/fuzz/fuzz_tokensnap.c $(DAEMON_SRC) $(PROTO_SRC)
$(O)/fuzz/fuzz_http_in: tests/fuzz/fuzz_http_in.c daemon/front/http_in.c
$(O)/fuzz/fuzz_policy: tests/fuzz/fuzz_policy.c $(CONFIG_SRC) daemon/core/policy.c daemon/lib/attest.c \
                       daemon/lib/unitcount.c $(PROTO_SRC)
$(O)/fuzz/%:
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(DAEMON_CFLAGS) -o $@ $(filter %.c,$^) $(DAEMON_LIBS) -lm

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)

# --- tests ------------------------------------------------------------------

deps:
	@tests/install-deps.sh

unit: $(addprefix $(O)/tests/,$(UNIT_TESTS))
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $(O)/tests/$$t; done

fuzz-build: $(addprefix $(O)/fuzz/,$(FUZZERS))

# Replays each corpus, then fuzzes each target briefly.
FUZZ_SECONDS ?= 15
fuzz: fuzz-build
	@set -e; for f in $(FUZZERS); do \
		echo "== $$f: corpus + $(FUZZ_SECONDS)s"; \
		mkdir -p $(O)/fuzz/corpus-$$f $(O)/fuzz/crashes; \
		if ! $(O)/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=10 \
			-rss_limit_mb=2048 -artifact_prefix=$(O)/fuzz/crashes/ \
			$(O)/fuzz/corpus-$$f tests/fuzz/corpus/$$f > $(O)/fuzz/$$f.log 2>&1; then \
			tail -n 40 $(O)/fuzz/$$f.log; \
			echo "$$f failed: add the input from $(O)/fuzz/crashes/ to tests/fuzz/corpus/$$f"; \
			exit 1; \
		fi; \
		tail -n 1 $(O)/fuzz/$$f.log; \
	done

# The long campaign: FUZZ_RUNS executions of each target (FUZZ_TARGETS); the
# inputs that reach new coverage (libFuzzer's -merge=1, a minimising merge)
# join tests/fuzz/corpus/, which make check replays.
FUZZ_RUNS ?= 10000000
FUZZ_TARGETS ?= $(FUZZERS)
fuzz-campaign: fuzz-build
	@set -e; for f in $(FUZZ_TARGETS); do \
		echo "== $$f: $(FUZZ_RUNS) runs"; \
		mkdir -p $(O)/fuzz/corpus-$$f $(O)/fuzz/crashes; \
		start=$$(date +%s); \
		if ! $(O)/fuzz/$$f -runs=$(FUZZ_RUNS) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=$(O)/fuzz/crashes/ \
			$(O)/fuzz/corpus-$$f tests/fuzz/corpus/$$f > $(O)/fuzz/$$f-campaign.log 2>&1; then \
			tail -n 40 $(O)/fuzz/$$f-campaign.log; \
			echo "$$f failed: add the input from $(O)/fuzz/crashes/ to tests/fuzz/corpus/$$f"; \
			exit 1; \
		fi; \
		grep -E "stat::number_of_executed_units|stat::peak_rss_mb|DONE" $(O)/fuzz/$$f-campaign.log; \
		echo "   $$(( $$(date +%s) - start )) s"; \
		before=$$(ls tests/fuzz/corpus/$$f | wc -l); \
		$(O)/fuzz/$$f -merge=1 -max_len=65536 tests/fuzz/corpus/$$f \
			$(O)/fuzz/corpus-$$f > $(O)/fuzz/$$f-merge.log 2>&1; \
		echo "   corpus: $$before inputs kept, $$(( $$(ls tests/fuzz/corpus/$$f | wc -l) - before )) added for new coverage"; \
	done

integration: all
	BATCHTOK_BUILD=$(abspath $(O)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# One pass: build, unit, integration.
check-one: all unit integration

# The packages installed into a Debian root booted with systemd as PID 1
# (tests/boot/): once per `make check`, not again under ASan.
boot: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/boot

# Modules include one another in layers, never in a cycle.
includes:
	@$(PYTHON) tests/check-includes.py

check: deps
	$(MAKE) includes
	$(MAKE) check-one
	$(MAKE) fuzz
	$(MAKE) boot
	$(MAKE) O=build-asan SAN=1 check-one
	@echo "make check: all passed (plain and ASan+UBSan)"

demo: deps all
	@BATCHTOK_BUILD=$(abspath $(O)) tests/demo.sh

# The daemon under valgrind's memcheck through a core subset of the
# integration tests: any memory error or definite leak fails its test.
VALGRIND_TESTS ?= tests/integration/test_get.py tests/integration/test_request_path.py \
                  tests/integration/test_credentials.py tests/integration/test_compat.py
VALGRIND := valgrind --quiet --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite
valgrind: all
	@tests/install-deps.sh valgrind
	BATCHTOK_DAEMON_WRAPPER="$(VALGRIND)" BATCHTOK_BUILD=$(abspath $(O)) \
		$(PYTHON) -m pytest -q -p no:cacheprovider $(VALGRIND_TESTS)

bench: deps
	$(MAKE) all $(O)/bench/bench_client $(O)/bench/raw_echo $(O)/bench/trivial \
		$(O)/bench/flood $(O)/bench/compat_load $(O)/bench/raw_http $(O)/bench/attest_cost \
		$(O)/bench/burst
	BATCHTOK_BUILD=$(abspath $(O)) $(PYTHON) tests/bench/bench.py

$(O)/bench/bench_client: $(call obj,tests/bench/bench_client.c) $(O)/libbatchtok.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread
$(O)/bench/burst: $(call obj,tests/bench/burst.c) $(O)/libbatchtok.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) $(LDFLAGS) -o $@ $^
$(O)/bench/raw_echo: $(call obj,tests/bench/raw_echo.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread
$(O)/bench/trivial: $(call obj,tests/bench/trivial.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
$(O)/bench/flood: $(call obj,tests/bench/flood.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
$(O)/bench/compat_load: $(call obj,tests/bench/compat_load.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread
$(O)/bench/attest_cost: $(call obj,tests/bench/attest_cost.c daemon/lib/attest.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(DAEMON_LIBS)
$(O)/bench/raw_http: $(call obj,tests/bench/raw_http.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(SYSCONFDIR)/batchtok \
		$(DESTDIR)$(SYSCONFDIR)/batchtok/batchtokd.conf.d
	install -m 0755 $(O)/batchtok $(DESTDIR)$(BINDIR)/batchtok
	install -m 0755 $(O)/batchtokd $(DESTDIR)$(SBINDIR)/batchtokd
	install -m 0644 $(O)/libbatchtok.a $(DESTDIR)$(LIBDIR)/libbatchtok.a
	install -m 0755 $(O)/libbatchtok.so $(DESTDIR)$(LIBDIR)/libbatchtok.so.0
	ln -sf libbatchtok.so.0 $(DESTDIR)$(LIBDIR)/libbatchtok.so
	install -m 0644 client/batchtok.h $(DESTDIR)$(INCLUDEDIR)/batchtok.h
	$(PC_SED) > $(DESTDIR)$(LIBDIR)/pkgconfig/batchtok.pc
	install -m 0644 daemon/batchtokd.conf.example $(DESTDIR)$(SYSCONFDIR)/batchtok/batchtokd.conf.example
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR)
	install -m 0644 systemd/batchtokd.service systemd/batchtokd.socket $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/user/batchtokd.service systemd/user/batchtokd.socket $(DESTDIR)$(USERUNITDIR)/
	install -D -m 0644 systemd/batchtok.sysusers $(DESTDIR)$(SYSUSERSDIR)/batchtok.conf
	install -D -m 0644 systemd/batchtok.tmpfiles $(DESTDIR)$(TMPFILESDIR)/batchtok.conf
	for m in $(MANPAGES); do \
		s=$${m##*.}; install -D -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	for f in client/python/batchtok/*.py; do \
		install -D -m 0644 $$f $(DESTDIR)$(PYTHONDIR)/batchtok/$${f##*/}; done

clean:
	rm -rf build build-asan

.PHONY: all deps unit fuzz fuzz-build fuzz-campaign integration boot includes check-one check demo bench valgrind format install clean
