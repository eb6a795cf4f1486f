# lua-truto: build, test and demo.  Variables follow LuaRocks' names so that
# `luarocks make` and a plain `make` compile the same sources the same way.

LUA_VERSION  ?= 5.4
LUA          ?= lua$(LUA_VERSION)
PKG_CONFIG   ?= pkg-config
LUA_INCDIR   ?= $(shell $(PKG_CONFIG) --variable=includedir lua$(LUA_VERSION) 2>/dev/null)/lua$(LUA_VERSION)
CURL_CFLAGS  ?= $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS    ?= $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
CRYPTO_LIBS  ?= $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)

CC           ?= cc
CFLAGS       ?= -O2 -g
WARNFLAGS    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
LIBFLAG      ?= -shared
PREFIX       ?= /usr/local
DESTDIR      ?=
INSTALL_LMOD ?= $(PREFIX)/share/lua/$(LUA_VERSION)
INSTALL_CMOD ?= $(PREFIX)/lib/lua/$(LUA_VERSION)

BUILD_DIR    := build/$(LUA_VERSION)
CORE         := $(BUILD_DIR)/truto/core.so
SOURCES      := $(wildcard csrc/*.c)
OBJECTS      := $(SOURCES:csrc/%.c=$(BUILD_DIR)/obj/%.o)
HEADERS      := $(wildcard csrc/*.h)
ALL_CFLAGS   := $(CFLAGS) $(WARNFLAGS) -fPIC -fvisibility=hidden -std=gnu99 \
                -I$(LUA_INCDIR) $(CURL_CFLAGS)

# Debian packages `make test` needs; installed on demand when missing.
DEB_PACKAGES := lua5.4 liblua5.4-dev libcurl4-openssl-dev libssl-dev lua-cjson \
                lua-busted lua-check pkg-config gcc make nginx-light \
                libnginx-mod-http-lua lua-dkjson nodejs node-qs curl

LUA_ENV := LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH='$(BUILD_DIR)/?.so;;'

.PHONY: all deps demo test lint unit clean install

# The seed's update.  Against the real API when TRUTO_API_TOKEN and
# TRUTO_INTEGRATED_ACCOUNT_ID are set, else against the bundled emulator.
DEMO_ACCOUNT := 62f44730-dd91-461e-bd6a-aedd9e0ad79d

all: $(CORE)

$(BUILD_DIR)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(CORE): $(OBJECTS)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) -o $@ $(OBJECTS) $(LDFLAGS) $(CURL_LIBS) $(CRYPTO_LIBS)

# Install whatever Debian package is missing (as root, or through sudo).
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: deps
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

unit: all
	$(LUA_ENV) $(LUA) /usr/bin/busted

test: deps
	$(MAKE) all
	$(MAKE) lint
	$(MAKE) unit

install: $(CORE)
	install -d $(DESTDIR)$(INSTALL_LMOD)/truto $(DESTDIR)$(INSTALL_CMOD)/truto
	install -m 644 lua/truto/*.lua $(DESTDIR)$(INSTALL_LMOD)/truto/
	install -m 755 $(CORE) $(DESTDIR)$(INSTALL_CMOD)/truto/core.so

clean:
	rm -rf build
