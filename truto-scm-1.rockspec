rockspec_format = "3.0"
package = "truto"
version = "scm-1"
source = {
  url = "git+file:///work/main",
}
description = {
  summary = "A Lua client for Truto's Unified API, with a C core on libcurl",
  detailed = [[
    Unified, Proxy and Custom API calls to Truto (https://api.truto.one) from
    Lua 5.4 and OpenResty: exact requests (Truto's bracket query notation, a
    JSON body writer that keeps empty arrays and full precision), clear errors,
    safe retries and streaming.
  ]],
  homepage = "https://github.com/lua-truto/lua-truto",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  CURL = { header = "curl/curl.h", library = "curl" },
  CRYPTO = { header = "openssl/hmac.h", library = "crypto" },
}
build = {
  type = "builtin",
  modules = {
    ["truto"] = "lua/truto/init.lua",
    ["truto.cli"] = "lua/truto/cli.lua",
    ["truto.client"] = "lua/truto/client.lua",
    ["truto.curl"] = "lua/truto/curl.lua",
    ["truto.errors"] = "lua/truto/errors.lua",
    ["truto.ngx"] = "lua/truto/ngx.lua",
    ["truto.ratelimit"] = "lua/truto/ratelimit.lua",
    ["truto.retry"] = "lua/truto/retry.lua",
    ["truto.schema"] = "lua/truto/schema.lua",
    ["truto.core"] = {
      sources = {
        "csrc/core.c", "csrc/curl_common.c", "csrc/decode.c", "csrc/encoder.c", "csrc/json.c",
        "csrc/multi.c", "csrc/number.c", "csrc/query.c", "csrc/request.c", "csrc/response.c",
        "csrc/session.c", "csrc/system.c", "csrc/table.c", "csrc/text.c", "csrc/webhook.c",
      },
      defines = { "_GNU_SOURCE" },
      incdirs = { "$(CURL_INCDIR)", "$(CRYPTO_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(CRYPTO_LIBDIR)" },
      libraries = { "curl", "crypto" },
    },
  },
}
