-- The release rockspec of lua-truto 0.2.0 (tag v0.2.0).  From a clone, on Debian:
--   luarocks --lua-version 5.4 make --deps-mode=none truto-0.2.0-1.rockspec
-- (README.md, "Installing", explains the flags.)
rockspec_format = "3.0"
package = "truto"
version = "0.2.0-1"
source = {
  url = "git+https://github.com/lua-truto/lua-truto.git",
  tag = "v0.2.0",
}
description = {
  summary = "A Lua client for Truto's API, with a C core on libcurl",
  detailed = [[
    Unified, Proxy and Custom API calls to Truto (https://api.truto.one) from
    Lua and OpenResty: exact requests (Truto's bracket query notation, a JSON
    body writer that keeps empty arrays and full precision), clear errors,
    safe retries, streaming, and a local Truto emulator for tests.
  ]],
  homepage = "https://github.com/lua-truto/lua-truto",
  license = "MIT",
  labels = { "truto", "http", "api-client", "openresty" },
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  CURL = { library = "curl" },
  CRYPTO = { library = "crypto" },
  ZLIB = { library = "z" },
  HTTP_PARSER = { header = "http_parser.h", library = "http_parser" },
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
}
-- Built by the Makefile (`make rock-install`), which compiles in a temp
-- dir so that nothing is left in the source tree, and installs the modules,
-- the C modules (truto/core.so; truto/curl_core.so, the libcurl transport,
-- loaded at the first transfer; truto/tls.so and truto/redis_core.so, loaded
-- when used) and the emulator's files;
-- LuaRocks installs the commands.
build = {
  type = "make",
  build_pass = false,
  install_target = "rock-install",
  install_variables = {
    LUA = "$(LUA)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    CURL_INCDIR = "$(CURL_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)",
    CRYPTO_INCDIR = "$(CRYPTO_INCDIR)",
    CRYPTO_LIBDIR = "$(CRYPTO_LIBDIR)",
    ZLIB_INCDIR = "$(ZLIB_INCDIR)",
    ZLIB_LIBDIR = "$(ZLIB_LIBDIR)",
    HTTP_PARSER_INCDIR = "$(HTTP_PARSER_INCDIR)",
    HTTP_PARSER_LIBDIR = "$(HTTP_PARSER_LIBDIR)",
    HIREDIS_INCDIR = "$(HIREDIS_INCDIR)",
    HIREDIS_LIBDIR = "$(HIREDIS_LIBDIR)",
    PREFIX = "$(PREFIX)",
    INSTALL_LMOD = "$(LUADIR)",
    INSTALL_CMOD = "$(LIBDIR)",
  },
  install = {
    bin = {
      ["truto"] = "bin/truto",
      ["truto-emulator"] = "bin/truto-emulator",
    },
  },
}
