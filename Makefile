# lua-truto: build, test and demo.  Variables follow LuaRocks' names so that
# `luarocks make` and a plain `make` compile the same sources the same way.

LUA_VERSION  ?= 5.4
LUA          ?= lua$(LUA_VERSION)
PKG_CONFIG   ?= pkg-config
LUA_INCDIR   ?= $(shell $(PKG_CONFIG) --variable=includedir lua$(LUA_VERSION) 2>/dev/null)/lua$(LUA_VERSION)
# pkg-config first; CURL_INCDIR/CURL_LIBDIR/CRYPTO_INCDIR/CRYPTO_LIBDIR/
# ZLIB_INCDIR/ZLIB_LIBDIR (as LuaRocks passes them) add to it.
CURL_CFLAGS  ?= $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null) $(if $(CURL_INCDIR),-I$(CURL_INCDIR)) \
                $(if $(CRYPTO_INCDIR),-I$(CRYPTO_INCDIR)) $(if $(ZLIB_INCDIR),-I$(ZLIB_INCDIR)) \
                $(if $(HTTP_PARSER_INCDIR),-I$(HTTP_PARSER_INCDIR)) $(if $(HIREDIS_INCDIR),-I$(HIREDIS_INCDIR))
CURL_LIBS    ?= $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
CRYPTO_LIBS  ?= $(if $(CRYPTO_LIBDIR),-L$(CRYPTO_LIBDIR)) \
                $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)
# truto.core loads libcrypto (HMAC, for webhooks) with dlopen at the first
# check rather than linking it: its file name is the soname of the libcrypto
# a link would use.
LIBCRYPTO_SONAME ?= $(if $(CRYPTO_LIBDIR),$(CRYPTO_LIBDIR)/)$(or $(shell objdump -p \
                      "$$($(CC) $(if $(CRYPTO_LIBDIR),-L$(CRYPTO_LIBDIR)) -print-file-name=libcrypto.so)" \
                      2>/dev/null | awk '/SONAME/ { print $$2 }'),libcrypto.so.3)
# libssl: truto.tls (csrc/tls.c), the TLS of the yielding hosts whose sockets
# have none (luv, Neovim), links it; only their first https connection loads it.
SSL_LIBS     ?= $(if $(CRYPTO_LIBDIR),-L$(CRYPTO_LIBDIR)) \
                $(shell $(PKG_CONFIG) --libs openssl 2>/dev/null || echo -lssl -lcrypto)
# hiredis: truto.redis_core (csrc/redis.c), the Redis protocol of the shared
# rate-limit store; only a client with a Redis store loads it.
HIREDIS_LIBS ?= $(if $(HIREDIS_LIBDIR),-L$(HIREDIS_LIBDIR)) \
                $(shell $(PKG_CONFIG) --libs hiredis 2>/dev/null || echo -lhiredis)
# zlib: csrc/inflate.c decodes gzip/deflate bodies for the nginx transport.
ZLIB_LIBS    ?= $(if $(ZLIB_LIBDIR),-L$(ZLIB_LIBDIR)) \
                $(shell $(PKG_CONFIG) --libs zlib 2>/dev/null || echo -lz)
# http-parser (Debian's libhttp-parser-dev, no pkg-config file): csrc/http1.c
# parses the responses of the engine over yielding sockets.
HTTP_PARSER_LIBS ?= $(if $(HTTP_PARSER_LIBDIR),-L$(HTTP_PARSER_LIBDIR)) -lhttp_parser
CORE_LIBS    := $(ZLIB_LIBS) $(HTTP_PARSER_LIBS)

CC           ?= cc
CFLAGS       ?= -O2 -g
WARNFLAGS    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
LIBFLAG      ?= -shared
PREFIX       ?= /usr/local
DESTDIR      ?=
INSTALL_LMOD ?= $(PREFIX)/share/lua/$(LUA_VERSION)
INSTALL_CMOD ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
BINDIR       ?= $(PREFIX)/bin

BUILD_DIR    ?= build/$(LUA_VERSION)
# Four C modules: truto.core (the writers, the reader, the request builder,
# webhooks, inflate, the HTTP/1.1 response parser, system helpers), which
# never loads libcurl, truto.curl_core (the libcurl session and multi),
# which lua/truto/curl.lua loads at the first transfer, truto.tls (TLS over
# memory buffers, on libssl), which lua/truto/cosocket.lua loads at a
# driver's first https handshake, and truto.redis_core (the Redis protocol,
# on hiredis), which lua/truto/redis.lua loads.  The other three carry their
# own copy of the few helpers of truto.core they use (*_HELPERS).
CURL_SOURCES := csrc/curl_core.c csrc/session.c csrc/multi.c csrc/stream.c csrc/curl_common.c
CURL_HELPERS := csrc/class.c csrc/encoder.c csrc/text.c csrc/decode.c csrc/headers.c
TLS_SOURCES  := csrc/tls.c
TLS_HELPERS  := csrc/class.c
REDIS_SOURCES := csrc/redis.c
REDIS_HELPERS := csrc/class.c
CORE_SOURCES := $(filter-out $(CURL_SOURCES) $(TLS_SOURCES) $(REDIS_SOURCES),$(wildcard csrc/*.c))
# The objects of each module built in directory $(1).
core_objects  = $(CORE_SOURCES:csrc/%.c=$(1)/obj/%.o)
curl_objects  = $(CURL_SOURCES:csrc/%.c=$(1)/obj/%.o) $(CURL_HELPERS:csrc/%.c=$(1)/obj/%.o)
tls_objects   = $(TLS_SOURCES:csrc/%.c=$(1)/obj/%.o) $(TLS_HELPERS:csrc/%.c=$(1)/obj/%.o)
redis_objects = $(REDIS_SOURCES:csrc/%.c=$(1)/obj/%.o) $(REDIS_HELPERS:csrc/%.c=$(1)/obj/%.o)
CORE         := $(BUILD_DIR)/truto/core.so
CURL_CORE    := $(BUILD_DIR)/truto/curl_core.so
TLS_CORE     := $(BUILD_DIR)/truto/tls.so
REDIS_CORE   := $(BUILD_DIR)/truto/redis_core.so
HEADERS      := $(wildcard csrc/*.h)
ALL_CFLAGS   := $(CFLAGS) $(WARNFLAGS) -fPIC -fvisibility=hidden -std=gnu99 \
                -I$(LUA_INCDIR) $(CURL_CFLAGS) -DTRUTO_LIBCRYPTO='"$(LIBCRYPTO_SONAME)"'

# Debian packages, installed on demand when missing: what the library, the
# emulator and the examples need (README.md's "Requirements" lists the same,
# spec/readme_spec.lua checks it), and what `make test` needs on top.
RUN_PACKAGES  := lua5.4 liblua5.4-dev libcurl4-openssl-dev zlib1g-dev libhttp-parser-dev libhiredis-dev libssl-dev lua-cjson gcc make pkg-config \
                 nginx-light libnginx-mod-http-lua lua-dkjson luajit2 libluajit2-5.1-dev
# The other Luas make test runs the specs under (liblua5.1-0-dev is what
# Debian's virtual liblua5.1-dev stands for); busted and the Lua libraries
# the specs load (lua-cjson, lua-dkjson) are packaged for every version.
OTHER_LUA_PACKAGES := lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev
TEST_PACKAGES := lua-busted lua-check luarocks lua-ldoc git nodejs node-qs curl openssl lua-cqueues lua-luaossl lua-luv neovim haproxy redis-server \
                 $(OTHER_LUA_PACKAGES)
DEB_PACKAGES  := $(RUN_PACKAGES) $(TEST_PACKAGES)

LUA_ENV := LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH='$(BUILD_DIR)/?.so;;'

# The LuaJIT build (OpenResty's branch, Lua 5.1 C API) that nginx loads.
LUAJIT         ?= luajit
LUAJIT_INCDIR  ?= $(shell $(PKG_CONFIG) --variable=includedir luajit 2>/dev/null || echo /usr/include/luajit-2.1)
LUAJIT_DIR     := build/luajit
LUAJIT_CORE    := $(LUAJIT_DIR)/truto/core.so
LUAJIT_CURL    := $(LUAJIT_DIR)/truto/curl_core.so
LUAJIT_TLS     := $(LUAJIT_DIR)/truto/tls.so
LUAJIT_REDIS   := $(LUAJIT_DIR)/truto/redis_core.so

# ---- every Lua ----------------------------------------------------------
# make test runs every spec under Lua 5.4, and these under Lua 5.1, 5.2, 5.3
# and LuaJIT, each against its own build (build/5.x, build/luajit): the
# specs without a server, and the integration specs against the emulator
# over loopback.  The others need Lua 5.4 itself or no core at all: the
# truto command and start-up (they start lua5.4), nginx (LuaJIT inside
# nginx), the #checkout specs (installs, the README, the docs, the rockspec)
# and the benchmarks.
SERVERLESS_SPECS  := $(addprefix spec/,query_spec.lua json_spec.lua decode_spec.lua request_spec.lua \
                     truto_spec.lua webhook_spec.lua errors_spec.lua retry_spec.lua ratelimit_spec.lua \
                     client_spec.lua bad_input_spec.lua inflate_spec.lua http1_spec.lua redirect_spec.lua \
                     number_spec.lua platform_spec.lua redis_spec.lua)
INTEGRATION_SPECS := $(addprefix spec/,integration_spec.lua emulator_spec.lua emulator_platform_spec.lua \
                     batch_spec.lua upload_spec.lua conformance_spec.lua faults_spec.lua tls_spec.lua \
                     session_spec.lua multi_spec.lua body_spec.lua stream_spec.lua journal_spec.lua \
                     store_spec.lua)
EVERY_LUA_SPECS   := $(SERVERLESS_SPECS) $(INTEGRATION_SPECS)
OTHER_LUAS      := 5.1 5.2 5.3 luajit
# How many of those runs go at once, beside nothing else: each is written to
# build/<lua>/busted.log and shown whole when it ends.
LUA_JOBS        ?= 2

.PHONY: all deps run-deps demo test lint unit every-lua $(OTHER_LUAS:%=unit-%) $(OTHER_LUAS:%=core-%) clean install install-lib install-bin uninstall rock-install \
        install-luajit uninstall-luajit check-install-paths asan asan-run valgrind valgrind-run \
        fuzz fuzz-build luajit bench docs

# The seed's update.  Against the real API when TRUTO_API_TOKEN and
# TRUTO_INTEGRATED_ACCOUNT_ID are set, else against the bundled emulator.
DEMO_ACCOUNT := 62f44730-dd91-461e-bd6a-aedd9e0ad79d

all: $(CORE) $(CURL_CORE) $(TLS_CORE) $(REDIS_CORE)

$(BUILD_DIR)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(CORE): $(call core_objects,$(BUILD_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(CORE_LIBS)

$(CURL_CORE): $(call curl_objects,$(BUILD_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(CURL_LIBS)

$(TLS_CORE): $(call tls_objects,$(BUILD_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(SSL_LIBS)

$(REDIS_CORE): $(call redis_objects,$(BUILD_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(HIREDIS_LIBS)

luajit: $(LUAJIT_CORE) $(LUAJIT_CURL) $(LUAJIT_TLS) $(LUAJIT_REDIS)

# The core for another Lua: core-5.1, core-5.2, core-5.3, core-luajit.
core-luajit: luajit

$(filter-out core-luajit,$(OTHER_LUAS:%=core-%)): core-%:
	@$(MAKE) --no-print-directory LUA_VERSION=$* all

$(LUAJIT_DIR)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARNFLAGS) -fPIC -fvisibility=hidden -std=gnu99 -I$(LUAJIT_INCDIR) $(CURL_CFLAGS) \
	  -DTRUTO_LIBCRYPTO='"$(LIBCRYPTO_SONAME)"' -c $< -o $@

$(LUAJIT_CORE): $(call core_objects,$(LUAJIT_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(CORE_LIBS)

$(LUAJIT_CURL): $(call curl_objects,$(LUAJIT_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(CURL_LIBS)

$(LUAJIT_TLS): $(call tls_objects,$(LUAJIT_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(SSL_LIBS)

$(LUAJIT_REDIS): $(call redis_objects,$(LUAJIT_DIR))
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $^ $(LDFLAGS) $(HIREDIS_LIBS)

# Install whatever Debian package is missing (as root, or through sudo);
# run-deps: only those the library, the emulator and the examples need.
run-deps:
	@$(MAKE) -s deps DEB_PACKAGES="$(RUN_PACKAGES)"

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: run-deps
	@$(MAKE) -s all
	@if [ -n "$$TRUTO_API_TOKEN" ] && [ -n "$$TRUTO_INTEGRATED_ACCOUNT_ID" ]; then \
	  echo "== calling $${TRUTO_BASE_URL:-https://api.truto.one}"; \
	  $(LUA_ENV) $(LUA) examples/update_opportunity.lua; \
	else \
	  out=$$(bin/truto-emulator --detach) || exit 1; \
	  url=$$(echo "$$out" | head -n 1); prefix=$$(echo "$$out" | sed -n 's/^prefix=//p'); \
	  echo "== emulator started at $$url (TRUTO_API_TOKEN is not set)"; echo; \
	  TRUTO_BASE_URL=$$url TRUTO_API_TOKEN=test-token TRUTO_INTEGRATED_ACCOUNT_ID=$(DEMO_ACCOUNT) \
	    $(LUA_ENV) $(LUA) examples/update_opportunity.lua; rc=$$?; \
	  bin/truto-emulator --stop "$$prefix" >/dev/null; echo; echo "== emulator stopped"; exit $$rc; \
	fi

lint:
	luacheck -q lua spec emulator/lua $(wildcard bin/*)

# Every spec under Lua 5.4 (the nginx specs load the LuaJIT build), then
# EVERY_LUA_SPECS under each other Lua.
unit: all luajit
	$(MAKE) LUA_VERSION=5.3 all   # the core HAProxy 2.6 loads (spec/haproxy_spec.lua)
	$(LUA_ENV) $(LUA) /usr/bin/busted
	@$(MAKE) --no-print-directory every-lua

every-lua: $(OTHER_LUAS:%=core-%)
	@$(MAKE) --no-print-directory -j$(LUA_JOBS) --output-sync=target $(OTHER_LUAS:%=unit-%)

# unit-5.1, unit-5.2, unit-5.3, unit-luajit: EVERY_LUA_SPECS under that Lua,
# in two busted processes: the heap the server-less specs leave slows the
# collector through the integration specs (LuaJIT: 226 s instead of 97 s).
$(OTHER_LUAS:%=unit-%): unit-%:
	@lua=$(if $(filter luajit,$*),$(LUAJIT),lua$*); dir=build/$*; log=$$dir/busted.log; \
	start=$$(date +%s); rc=0; : >$$log; \
	for specs in "$(SERVERLESS_SPECS)" "$(INTEGRATION_SPECS)"; do \
	  LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH="$$dir/?.so;;" \
	    $$lua /usr/bin/busted --cpath="$$dir/?.so" $$specs >>$$log 2>&1 || rc=1; \
	done; \
	echo "== $$($$lua -v 2>&1 | head -n 1 | cut -d ' ' -f 1-2): $(words $(EVERY_LUA_SPECS)) spec files," \
	  "$$(( $$(date +%s) - start )) s ($$log)"; \
	if [ $$rc = 0 ]; then grep -E '^[0-9]+ successes? /' $$log; else cat $$log; fi; exit $$rc

test: deps
	$(MAKE) all
	$(MAKE) lint
	$(MAKE) unit

# ---- memory safety ------------------------------------------------------
# `make asan`: the core built with AddressSanitizer + UBSan into build/asan
# (build/5.4 is left alone), then the whole suite with the runtimes
# preloaded into lua5.4.  fuzz/unpreload.c takes LD_PRELOAD out of the
# environment once lua5.4 has started, so the processes the specs spawn
# (sh, nginx, curl, node, bin/truto) run unsanitized.  Any sanitizer report
# fails the target, even one from a process whose exit status is ignored.
# The #checkout specs (installing, the OpenResty example, the README's
# commands) start compilers and installers in fresh checkouts rather than
# exercise the core in this process: `make test` runs them, asan and
# valgrind leave them out, and the #slow ones (a million random doubles
# against node: minutes under memcheck; the fuzz harness covers the printer).
ASAN_CC      ?= gcc
ASAN_DIR     := build/asan
ASAN_CORE    := $(ASAN_DIR)/truto/core.so
ASAN_CURL    := $(ASAN_DIR)/truto/curl_core.so
ASAN_TLS     := $(ASAN_DIR)/truto/tls.so
ASAN_REDIS   := $(ASAN_DIR)/truto/redis_core.so
# gcc's "undefined" leaves out float-cast-overflow (clang's includes it).
ASAN_CFLAGS  := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -O1 -g $(WARNFLAGS) -fPIC -fvisibility=hidden \
                -std=gnu99 -I$(LUA_INCDIR) $(CURL_CFLAGS) -DTRUTO_LIBCRYPTO='"$(LIBCRYPTO_SONAME)"'
# The specs that stream 50-100 MB check that RSS stays flat: a small
# quarantine, and a collector that waits less (redzones make the live heap,
# and so Lua's default 200% pause, much larger than natively).
ASAN_OPTIONS  ?= detect_leaks=1:quarantine_size_mb=8:abort_on_error=0:strict_string_checks=1
ASAN_LUA_INIT ?= collectgarbage("incremental", 150)
UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
SANITIZER_REPORT := ^==[0-9]+==(ERROR|WARNING): |^SUMMARY: [A-Za-z]+Sanitizer|: runtime error: |^[=]+ERROR: libFuzzer

$(ASAN_DIR)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(ASAN_CC) $(ASAN_CFLAGS) -c $< -o $@

$(ASAN_CORE): $(call core_objects,$(ASAN_DIR))
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -fsanitize=address,undefined -o $@ $^ $(LDFLAGS) $(CORE_LIBS)

$(ASAN_CURL): $(call curl_objects,$(ASAN_DIR))
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -fsanitize=address,undefined -o $@ $^ $(LDFLAGS) $(CURL_LIBS)

$(ASAN_TLS): $(call tls_objects,$(ASAN_DIR))
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -fsanitize=address,undefined -o $@ $^ $(LDFLAGS) $(SSL_LIBS)

$(ASAN_REDIS): $(call redis_objects,$(ASAN_DIR))
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -fsanitize=address,undefined -o $@ $^ $(LDFLAGS) $(HIREDIS_LIBS)

$(ASAN_DIR)/unpreload.so: fuzz/unpreload.c
	@mkdir -p $(dir $@)
	$(ASAN_CC) -shared -fPIC -O2 -o $@ $<

# bin/truto (run by the CLI spec) loads build/5.4's modules: `all` builds them.
asan: deps
	@$(MAKE) -s asan-run

asan-run: all $(ASAN_CORE) $(ASAN_CURL) $(ASAN_TLS) $(ASAN_REDIS) $(ASAN_DIR)/unpreload.so
	@log=$(ASAN_DIR)/busted.log; \
	LD_PRELOAD="$$($(ASAN_CC) -print-file-name=libasan.so) $$($(ASAN_CC) -print-file-name=libubsan.so) $(CURDIR)/$(ASAN_DIR)/unpreload.so" \
	ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' LUA_INIT_5_4='$(ASAN_LUA_INIT)' \
	LSAN_OPTIONS='suppressions=$(CURDIR)/spec/support/lsan.supp:print_suppressions=0' \
	LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH='$(ASAN_DIR)/?.so;;' \
	  $(LUA) /usr/bin/busted --cpath='$(ASAN_DIR)/?.so' --exclude-tags=checkout,slow >$$log 2>&1; rc=$$?; cat $$log; \
	if grep -Eq '$(SANITIZER_REPORT)' $$log; then echo "make asan: sanitizer report (see $$log)"; exit 1; fi; \
	exit $$rc

# `make valgrind`: the whole suite (about a minute) under memcheck, against
# the normal build; children (nginx, curl, sh) are not traced.  A small
# freelist keeps the specs' flat-RSS checks meaningful.
VALGRIND_FLAGS ?= -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
                  --trace-children=no --freelist-vol=4000000 --num-callers=30 \
                  --suppressions=spec/support/valgrind.supp
valgrind: deps
	@$(MAKE) -s deps DEB_PACKAGES=valgrind
	@$(MAKE) -s valgrind-run

valgrind-run: all
	@log=build/valgrind.log; \
	$(LUA_ENV) valgrind $(VALGRIND_FLAGS) $(LUA) /usr/bin/busted --cpath='$(BUILD_DIR)/?.so' --exclude-tags=checkout,slow \
	  >$$log 2>&1; rc=$$?; cat $$log; \
	if grep -Eq '^==[0-9]+== [A-Z]' $$log; then echo "make valgrind: memcheck report (see $$log)"; exit 1; fi; \
	exit $$rc

# `make fuzz`: libFuzzer harnesses (fuzz/*.c), one per C entry point that
# reads or writes untrusted data, each run FUZZ_SECONDS from the seeds in
# fuzz/corpus/<name>/.  New inputs go to build/fuzz/corpus/<name>/, crashes
# to build/fuzz/artifacts/.  Replay one: build/fuzz/<name> FILE.
FUZZ_SECONDS ?= 30
FUZZ_CC      ?= clang
FUZZ_DIR     := build/fuzz
FUZZERS      := query json request decode headers inflate http1 webhook redis
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -O1 -g $(FUZZ_SAN) -std=gnu99 -I$(LUA_INCDIR) -Icsrc $(CURL_CFLAGS)
# clang with libFuzzer's runtime (libclang-rt-dev), installed on demand.
FUZZ_PACKAGES := clang libclang-rt-dev liblua5.4-dev libcurl4-openssl-dev zlib1g-dev libhttp-parser-dev libhiredis-dev \
                 libssl-dev pkg-config
# truto.core's objects and curl_common.c (its byte buffers serve the inflate
# and http1 harnesses, its header parsing the headers harness), with libcurl.
FUZZ_OBJECTS := $(call core_objects,$(FUZZ_DIR)) $(FUZZ_DIR)/obj/curl_common.o
FUZZ_LIBS    := $(shell $(PKG_CONFIG) --libs lua$(LUA_VERSION) 2>/dev/null || echo -llua$(LUA_VERSION)) \
                $(CRYPTO_LIBS) $(CORE_LIBS) $(CURL_LIBS) -lm

$(FUZZ_DIR)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# The headers harness includes csrc/session.c to reach its static parsers.
$(FUZZ_DIR)/headers: fuzz/headers.c fuzz/fuzz_lua.h csrc/session.c $(FUZZ_OBJECTS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJECTS) $(FUZZ_LIBS)

# The redis harness links truto.redis_core's reader, on hiredis.
$(FUZZ_DIR)/redis: fuzz/redis.c fuzz/fuzz_lua.h $(FUZZ_OBJECTS) $(FUZZ_DIR)/obj/redis.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJECTS) $(FUZZ_DIR)/obj/redis.o $(FUZZ_LIBS) \
	  $(HIREDIS_LIBS)

$(FUZZ_DIR)/%: fuzz/%.c fuzz/fuzz_lua.h $(FUZZ_OBJECTS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJECTS) $(FUZZ_LIBS)

fuzz-build:
	@$(MAKE) -s deps DEB_PACKAGES="$(FUZZ_PACKAGES)"
	$(MAKE) $(FUZZERS:%=$(FUZZ_DIR)/%)

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$f; \
	  dict=; [ -f fuzz/$$f.dict ] && dict=-dict=fuzz/$$f.dict; \
	  echo "== fuzz $$f ($(FUZZ_SECONDS) s)"; \
	  $(FUZZ_DIR)/$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$f- $$dict \
	    $(FUZZ_DIR)/corpus/$$f fuzz/corpus/$$f >$(FUZZ_DIR)/$$f.log 2>&1; rc=$$?; \
	  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' $(FUZZ_DIR)/$$f.log; \
	  if [ $$rc != 0 ] || grep -Eq '$(SANITIZER_REPORT)' $(FUZZ_DIR)/$$f.log; then \
	    tail -n 60 $(FUZZ_DIR)/$$f.log; echo "make fuzz: $$f failed (log: $(FUZZ_DIR)/$$f.log)"; exit 1; fi; \
	done

# ---- benchmarks ----------------------------------------------------------
# `make bench`: seven benchmarks against loopback nginx, each with a
# reference measured side by side in the same run (bench/README.md); the C
# references build and parse JSON with cJSON (Debian: libcjson-dev).
BENCH_DIR   := build/bench
CJSON_FLAGS  = $(shell $(PKG_CONFIG) --cflags --libs libcjson 2>/dev/null || echo -lcjson)

$(BENCH_DIR)/%: bench/%.c bench/bench_common.h bench/bench_curl.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -o $@ $< $(CURL_CFLAGS) $(CURL_LIBS) $(CJSON_FLAGS)

# B2's and B3's Lua floor: a Lua module for the bench only, never installed.
$(BENCH_DIR)/lua_floor.so: bench/lua_floor.c bench/bench_curl.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -fPIC -shared -o $@ $< -I$(LUA_INCDIR) $(CURL_CFLAGS) $(CURL_LIBS) $(CJSON_FLAGS)

bench: deps
	@$(MAKE) -s deps DEB_PACKAGES="lua-socket libcjson-dev"
	@$(MAKE) -s all $(BENCH_DIR)/curl_loop $(BENCH_DIR)/curl_multi $(BENCH_DIR)/lua_floor.so
	@BENCH_BIN=$(BENCH_DIR) bench/run

# ---- API reference -------------------------------------------------------
# `make docs`: HTML from the LuaLS annotations in lua/truto/ (config.ld
# teaches LDoc to read them) into DOCS_DIR.  LDoc exits 0 on most warnings
# and always prints which config it read, so any other line it prints fails.
DOCS_DIR ?= build/docs

docs:
	@$(MAKE) -s deps DEB_PACKAGES=lua-ldoc
	@mkdir -p $(DOCS_DIR)
	@out=$$(ldoc -q --fatalwarnings -c config.ld -d $(DOCS_DIR) . 2>&1); rc=$$?; \
	out=$$(printf '%s\n' "$$out" | grep -v '^reading configuration from config.ld$$'); \
	if [ $$rc != 0 ] || [ -n "$$out" ]; then \
	  printf '%s\n' "$$out"; echo "make docs: LDoc warnings (exit status $$rc)"; exit 1; fi; \
	echo "API reference: $(DOCS_DIR)/index.html"

# ---- install -------------------------------------------------------------
# What `make install` puts where, relative to $(DESTDIR): the modules users
# call (and those they need), the two C modules, the emulator's files beside
# truto/emulator.lua (it finds them from its own path, so an installed tree
# can be moved, or used from $(DESTDIR)), and the two commands with the
# interpreter and the installed directories written into them.
LUA_MODULES   := $(wildcard lua/truto/*.lua)
# The modules are installed compiled by $(LUA) (string.dump: debug information
# kept, named by their installed path, so errors and tracebacks read as from
# the sources): loading bytecode skips the parser, about 2 ms of every
# `require "truto"`.  Empty COMPILE_LUA installs the sources: for LuaJIT,
# whose bytecode is tied to the VM build nginx links, and for LuaRocks, which
# does not say which Lua the tree is for.
COMPILE_LUA   ?= yes
EMULATOR_DIR  := $(INSTALL_LMOD)/truto/emulator
EMULATOR_LUA  := $(wildcard emulator/lua/truto_emulator/*.lua)
COMMANDS      := truto truto-emulator
INSTALLED     := $(LUA_MODULES:lua/%=$(INSTALL_LMOD)/%) \
                 $(INSTALL_CMOD)/truto/core.so $(INSTALL_CMOD)/truto/curl_core.so $(INSTALL_CMOD)/truto/tls.so \
                 $(INSTALL_CMOD)/truto/redis_core.so \
                 $(EMULATOR_DIR)/nginx.conf.in $(EMULATOR_DIR)/fixtures.json \
                 $(EMULATOR_LUA:emulator/%=$(EMULATOR_DIR)/%) $(COMMANDS:%=$(BINDIR)/%)
# Directories that hold nothing but ours, deepest first: uninstall removes them.
INSTALLED_DIRS := $(EMULATOR_DIR)/lua/truto_emulator $(EMULATOR_DIR)/lua $(EMULATOR_DIR) \
                  $(INSTALL_LMOD)/truto $(INSTALL_CMOD)/truto
# The commands' shebang names the interpreter the core was built for.
LUA_SHEBANG   := $(if $(filter /%,$(LUA)),$(LUA),/usr/bin/env $(LUA))

# make splits its words at white space: such a path would install pieces elsewhere.
INSTALL_PATHS := $(DESTDIR)$(PREFIX)$(INSTALL_LMOD)$(INSTALL_CMOD)$(BINDIR)
check-install-paths:
	$(if $(word 2,$(INSTALL_PATHS)),$(error DESTDIR, PREFIX, INSTALL_LMOD, INSTALL_CMOD and BINDIR cannot hold white space))

install: install-lib install-bin

install-lib: check-install-paths $(CORE) $(CURL_CORE) $(TLS_CORE) $(REDIS_CORE)
	install -d $(DESTDIR)$(INSTALL_LMOD)/truto $(DESTDIR)$(INSTALL_CMOD)/truto \
	  $(DESTDIR)$(EMULATOR_DIR)/lua/truto_emulator
	@for f in $(LUA_MODULES); do \
	  dest=$(DESTDIR)$(INSTALL_LMOD)/truto/$${f##*/}; \
	  if [ -n "$(COMPILE_LUA)" ]; then \
	    $(LUA) -e "local f = assert((loadstring or load)(assert(io.open('$$f')):read('*a'), '@$(INSTALL_LMOD)/truto/$${f##*/}')) \
	      local out = assert(io.open('$$dest', 'wb')) out:write(string.dump(f)) out:close()" \
	      && chmod 644 "$$dest" || exit 1; \
	  else install -m 644 "$$f" "$$dest" || exit 1; fi; \
	done
	install -m 755 $(CORE) $(CURL_CORE) $(TLS_CORE) $(REDIS_CORE) $(DESTDIR)$(INSTALL_CMOD)/truto/
	install -m 644 emulator/nginx.conf.in emulator/fixtures.json $(DESTDIR)$(EMULATOR_DIR)/
	install -m 644 $(EMULATOR_LUA) $(DESTDIR)$(EMULATOR_DIR)/lua/truto_emulator/

# The commands load the installed modules and core first, never a clone's.
install-bin: check-install-paths
	install -d $(DESTDIR)$(BINDIR)
	@for c in $(COMMANDS); do \
	  sed -e '1s|^#!.*|#!$(LUA_SHEBANG)|' \
	      -e 's|^local LUA_DIR, CORE_DIR = nil, nil$$|local LUA_DIR, CORE_DIR = [[$(INSTALL_LMOD)]], [[$(INSTALL_CMOD)]]|' \
	      bin/$$c > $(DESTDIR)$(BINDIR)/$$c.tmp && \
	  grep -q '^local LUA_DIR, CORE_DIR = \[\[' $(DESTDIR)$(BINDIR)/$$c.tmp && \
	  chmod 755 $(DESTDIR)$(BINDIR)/$$c.tmp && mv $(DESTDIR)$(BINDIR)/$$c.tmp $(DESTDIR)$(BINDIR)/$$c || \
	  { rm -f $(DESTDIR)$(BINDIR)/$$c.tmp; echo "make install: cannot write $(BINDIR)/$$c"; exit 1; }; \
	done

uninstall: check-install-paths
	rm -f $(INSTALLED:%=$(DESTDIR)%)
	@for d in $(INSTALLED_DIRS:%=$(DESTDIR)%); do [ ! -d $$d ] || rmdir $$d 2>/dev/null || \
	  echo "make uninstall: $$d is not empty: left in place"; done

# LuaRocks (truto-*.rockspec, build type "make") runs this one target: the
# C modules are compiled in a temp dir, so a `luarocks make` leaves nothing in the
# source tree; LuaRocks itself installs and wraps the commands (build.install.bin).
# For nginx's LuaJIT (OpenResty): the modules, the emulator's files and the C
# modules built for LuaJIT (Lua 5.1's API) go where nginx's Lua looks by default
# ($(PREFIX)/share/lua/5.1, $(PREFIX)/lib/lua/5.1); the commands stay Lua 5.4's.
install-luajit:
	@$(MAKE) --no-print-directory install-lib LUA_VERSION=5.1 LUA=$(LUAJIT) LUA_INCDIR=$(LUAJIT_INCDIR) \
	  BUILD_DIR=$(LUAJIT_DIR) COMPILE_LUA=

uninstall-luajit:
	@$(MAKE) --no-print-directory uninstall LUA_VERSION=5.1 COMMANDS=

rock-install:
	@case "$${TMPDIR:-/tmp}" in *[[:space:]]*) base=/tmp ;; *) base=$${TMPDIR:-/tmp} ;; esac; \
	tmp=$$(mktemp -d "$$base/truto-rock.XXXXXX") || exit 1; \
	$(MAKE) --no-print-directory install-lib BUILD_DIR="$$tmp" COMPILE_LUA=; rc=$$?; rm -rf "$$tmp"; exit $$rc

clean:
	rm -rf build
