-- SHA-256 (incremental) and HMAC-SHA256 for the emulator: the digests of
-- uploaded parts and of raw bodies, and the signatures of webhook events.
-- They come from OpenSSL's libcrypto through LuaJIT's FFI: nginx's own when
-- its symbols are global (nginx links it for TLS), else the system's.
local ffi = require "ffi"

local _M = {}

-- One declaration at a time: a declaration another module already made
-- (an identical typedef) fails alone, leaving the others declared.
for _, declaration in ipairs {
  "typedef struct evp_md_ctx_st EVP_MD_CTX;",
  "typedef struct evp_md_st EVP_MD;",
  "typedef struct engine_st ENGINE;",
  "EVP_MD_CTX *EVP_MD_CTX_new(void);",
  "void EVP_MD_CTX_free(EVP_MD_CTX *ctx);",
  "const EVP_MD *EVP_sha256(void);",
  "int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl);",
  "int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt);",
  "int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);",
  "unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n, "
    .. "unsigned char *md, unsigned int *md_len);",
} do
  pcall(ffi.cdef, declaration)
end

local lib = (function()
  if pcall(function() return ffi.C.EVP_DigestInit_ex and ffi.C.HMAC end) then return ffi.C end
  local ok, crypto = pcall(ffi.load, "crypto")
  if ok then return crypto end
  return ffi.load("libcrypto.so.3")
end)()

local function hex(digest, length)
  local out = {}
  for i = 0, length - 1 do out[#out + 1] = string.format("%02x", digest[i]) end
  return table.concat(out)
end

--- An incremental SHA-256: `update(bytes)` as often as needed, then `hex()`
-- (64 lower-case hex digits) once.
---@return { update: fun(data: string), hex: fun(): string }
function _M.sha256()
  local ctx = ffi.gc(lib.EVP_MD_CTX_new(), lib.EVP_MD_CTX_free)
  assert(ctx ~= nil and lib.EVP_DigestInit_ex(ctx, lib.EVP_sha256(), nil) == 1, "EVP_DigestInit_ex failed")
  return {
    update = function(data) assert(lib.EVP_DigestUpdate(ctx, data, #data) == 1, "EVP_DigestUpdate failed") end,
    hex = function()
      local digest, length = ffi.new("unsigned char[32]"), ffi.new("unsigned int[1]")
      assert(lib.EVP_DigestFinal_ex(ctx, digest, length) == 1, "EVP_DigestFinal_ex failed")
      return hex(digest, length[0])
    end,
  }
end

--- HMAC-SHA256 of data keyed with key, as 64 lower-case hex digits.
---@param key string
---@param data string
---@return string
function _M.hmac_sha256_hex(key, data)
  local digest, length = ffi.new("unsigned char[32]"), ffi.new("unsigned int[1]")
  assert(lib.HMAC(lib.EVP_sha256(), key, #key, data, #data, digest, length) ~= nil, "HMAC failed")
  return hex(digest, length[0])
end

return _M
