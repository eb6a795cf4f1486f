-- truto.verify_webhook: X-Truto-Signature checks (HMAC-SHA256, constant time).
local truto = require "truto"

local SECRET = "s3cret"
local BODY = '{"event":"x"}'
-- openssl dgst -sha256 -hmac s3cret <<< '{"event":"x"}' (without the newline)
local SIG = "474d9c54253f9ebd95cf3904ce830fcb6bbd65180b2530ca40371a177bb6e02b"
-- the same digest in base64: ... -binary | base64
local SIG64 = "R02cVCU/nr2VzzkEzoMPy2u9ZRgLJTDKQDcaF3u24Cs="

local function verify(header, body, secret)
  return truto.verify_webhook(secret or SECRET, body or BODY, header)
end

describe("truto.verify_webhook", function()
  it("accepts a correct signature", function()
    assert.same({ true }, { verify("format=sha256,v=" .. SIG) })
    assert.same({ true }, { verify(" format=sha256 , v=" .. SIG:upper() .. " ") })
    assert.same({ true }, { verify("v=" .. SIG .. ",format=sha256") })
  end)

  it("accepts the digest in base64, padded or not, in either alphabet", function()
    assert.same({ true }, { verify("format=sha256,v=" .. SIG64) })
    assert.same({ true }, { verify("format=sha256,v=" .. SIG64:sub(1, 43)) })
    assert.same({ true }, { verify("format=sha256,v=" .. SIG64:gsub("/", "_")) })
    assert.same({ false, "signature mismatch" }, { verify("format=sha256,v=" .. SIG64, BODY .. " ") })
    -- one bit of the digest flipped ('Q' -> 'R' in the middle)
    local flipped = SIG64:sub(1, 30) .. (SIG64:sub(31, 31) == "Q" and "R" or "Q") .. SIG64:sub(32)
    assert.same({ false, "signature mismatch" }, { verify("format=sha256,v=" .. flipped) })
  end)

  it("refuses base64 that is not a digest's canonical spelling", function()
    local malformed = "malformed signature: expected 64 hex digits or 44 base64 characters"
    for _, v in ipairs {
      SIG64:sub(1, 42) .. "t=",     -- 't' leaves the two unused bits set
      SIG64:sub(1, 43) .. "==",     -- 45 characters
      SIG64:sub(1, 42) .. "==",     -- a 31-byte value
      SIG64:sub(1, 43) .. "A",      -- 44 characters, no padding
      SIG64:sub(1, 10) .. "*" .. SIG64:sub(12),
      SIG64:sub(1, 10) .. "=" .. SIG64:sub(12),
    } do
      assert.same({ false, malformed }, { verify("format=sha256,v=" .. v) }, v)
    end
  end)

  it("accepts any of several signatures (secret rotation)", function()
    assert.same({ true }, { verify("format=sha256,v=" .. ("0"):rep(64) .. ",v=" .. SIG) })
  end)

  it("rejects a changed body, another secret, or a changed signature", function()
    assert.same({ false, "signature mismatch" }, { verify("format=sha256,v=" .. SIG, BODY .. " ") })
    assert.same({ false, "signature mismatch" }, { verify("format=sha256,v=" .. SIG, nil, "other") })
    assert.same({ false, "signature mismatch" }, { verify("format=sha256,v=" .. SIG:sub(1, 63) .. "0") })
  end)

  it("gives the reason for a missing or malformed header", function()
    local cases = {
      { nil, "missing signature header" },
      { "", "malformed signature header: no format=sha256" },
      { "v=" .. SIG, "malformed signature header: no format=sha256" },
      { "format=sha256", "malformed signature header: no v=" },
      { "format=sha1,v=" .. SIG, "unsupported signature format" },
      { "format=sha256,v=" .. SIG:sub(3), "malformed signature: expected 64 hex digits or 44 base64 characters" },
      { "format=sha256,v=" .. SIG:sub(3) .. "zz", "malformed signature: expected 64 hex digits or 44 base64 characters" },
      { "format=sha256;v=" .. SIG, "unsupported signature format" },
      { "garbage", "malformed signature header" },
      { "format=sha256,v=" .. SIG .. ",junk", "malformed signature header" },
    }
    for _, c in ipairs(cases) do
      assert.same({ false, c[2] }, { verify(c[1]) }, tostring(c[1]))
    end
  end)

  it("raises for a missing secret or body", function()
    assert.has_error(function() truto.verify_webhook("", BODY, "x") end)
    assert.has_error(function() truto.verify_webhook(nil, BODY, "x") end)
    assert.has_error(function() truto.verify_webhook(SECRET, nil, "x") end)
  end)

  it("checks a body with NUL bytes and binary data", function()
    local body = "a\0b\255"
    local pipe = assert(io.popen("printf 'a\\000b\\377' | openssl dgst -sha256 -hmac " .. SECRET))
    local hex = pipe:read("*a"):match("(%x+)%s*$")
    pipe:close()
    assert.same({ true }, { verify("format=sha256,v=" .. hex, body) })
  end)
end)
