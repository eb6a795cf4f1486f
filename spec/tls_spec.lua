-- The client over HTTPS against the emulator (emulator.start{ tls = true }:
-- a throwaway CA, a certificate for 127.0.0.1 and localhost, HTTP/2 when
-- nginx has it), and what it does with redirects.
local curl_core = require "truto.curl_core"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local ID = "10000005"
local PATH = "/unified/crm/opportunities/" .. ID
local QUERY = "?integrated_account_id=" .. ACCOUNT

-- A 3xx answered by the emulator in place of the next matching request.
local function redirect(status, location, count, method)
  emu.faults { { method = method or "GET", path_prefix = PATH, status = status, count = count or 1,
                 headers = { Location = location } } }
end

-- A redirect the client refused: a "protocol" error with this message, after
-- one attempt, not retryable.
local function assert_refused(err, message)
  assert.equal("protocol", err.kind)
  assert.equal(message, err.message)
  assert.equal(1, err.attempts)
  assert.is_false(err.retryable)
end

describe("HTTPS", function()
  local plain             -- a plain-HTTP emulator: the target of an https -> http redirect

  setup(function()
    emu.start { tls = true }
    plain = assert(emulator.start())
  end)

  teardown(function()
    plain:stop()
    emu.stop()
  end)

  before_each(emu.reset)

  it("serves https://127.0.0.1 with a CA of its own, and HTTP/2", function()
    assert.equal("https://127.0.0.1:" .. emu.port, emu.base_url)
    local pem = assert(io.open(emu.ca_file)):read("*a")
    assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-\n", pem)
    assert.is_true(emu.http2)
  end)

  it("without ca_file: kind \"tls\", not retried, nothing reaches the server", function()
    local client = emu.client { max_retries = 2, sleep = function() error("no retry expected") end }
    local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.is_nil(record)
    assert.equal("tls", err.kind)
    assert.matches("certificate", err.message)
    assert.equal(1, err.attempts)
    assert.is_false(err.retryable)
    assert.is_nil(err.status)
    assert.same({}, emu.requests())
    client:close()
  end)

  it("with ca_file = the emulator's CA: verified, over HTTP/2", function()
    local client = emu.client { ca_file = emu.ca_file }
    local record, response = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(ID, record.id)
    assert.equal(1, response.attempts)
    assert.equal("2", response.info.http_version)
    local updated = assert(client.unified_api:update("crm", "opportunities", ID, { amount = 31337 }, Q))
    assert.equal(31337, updated.amount)
    local log = emu.requests()
    assert.equal(2, #log)
    assert.equal('{"amount":31337}', log[2].body)
    assert.equal("Bearer test-token", log[2].headers.authorization)
    client:close()

    -- http2 = false on the client: HTTP/1.1 over TLS.
    client = emu.client { ca_file = emu.ca_file, http2 = false }
    local _, r = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal("1.1", r.info.http_version)
    client:close()
  end)

  it("with insecure = true: not verified, succeeds", function()
    local client = emu.client { insecure = true }
    local record, response = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(ID, record.id)
    assert.equal("2", response.info.http_version)
    client:close()
  end)

  it("localhost is in the certificate too", function()
    local client = emu.client { ca_file = emu.ca_file, base_url = "https://localhost:" .. emu.port }
    assert.equal(ID, assert(client.unified_api:get("crm", "opportunities", ID, Q)).id)
    client:close()
  end)

  describe("redirects", function()
    local elsewhere          -- the same server under another host name: another origin

    before_each(function()
      elsewhere = "https://localhost:" .. emu.port
    end)

    it("are not followed by default: the 3xx is an error of kind \"http\", not retried", function()
      local client = emu.client { ca_file = emu.ca_file, sleep = function() error("no retry expected") end }
      redirect(302, elsewhere .. PATH .. QUERY)
      local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
      assert.is_nil(record)
      assert.equal("http", err.kind)
      assert.equal(302, err.status)
      assert.equal(elsewhere .. PATH .. QUERY, err.headers.location)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(1, #emu.requests())
      client:close()
    end)

    it("follow_redirects: within the origin, method, body and Authorization are kept", function()
      local client = emu.client { ca_file = emu.ca_file, follow_redirects = true, idempotency = false }
      redirect(307, emu.base_url .. "/unified/crm/opportunities/10000006" .. QUERY, 1, "PATCH")
      local record, response = client.unified_api:update("crm", "opportunities", ID, { amount = 7 }, Q)
      assert.equal("10000006", record.id)
      assert.equal(7, record.amount)
      assert.equal(1, response.attempts)
      assert.equal(1, response.info.redirects)
      local log = emu.requests()
      assert.equal(2, #log)
      assert.equal(PATH, log[1].path)
      assert.equal("/unified/crm/opportunities/10000006", log[2].path)
      assert.equal("PATCH", log[2].method)
      assert.equal('{"amount":7}', log[2].body)
      assert.equal("Bearer test-token", log[1].headers.authorization)
      assert.equal("Bearer test-token", log[2].headers.authorization)
      client:close()
    end)

    it("follow_redirects: Authorization does not go to another host", function()
      local client = emu.client { ca_file = emu.ca_file, follow_redirects = true }
      redirect(307, elsewhere .. PATH .. QUERY)
      local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
      assert.is_nil(record)
      assert.equal("http", err.kind)
      assert.equal(401, err.status)            -- the other host saw no token
      assert.equal("Missing Authorization header with Bearer token", err.message)
      local log = emu.requests()
      assert.equal(2, #log)
      assert.equal("Bearer test-token", log[1].headers.authorization)
      assert.equal("127.0.0.1:" .. emu.port, log[1].headers.host)
      assert.is_nil(log[2].headers.authorization)
      assert.equal("localhost:" .. emu.port, log[2].headers.host)
      assert.equal(PATH, log[2].path)
      client:close()
    end)

    it("follow_redirects: https -> http is refused (kind \"protocol\"), not retried, never sent", function()
      local client = emu.client { ca_file = emu.ca_file, follow_redirects = true, max_retries = 2,
                                  sleep = function() error("no retry expected") end }
      redirect(302, plain.base_url .. PATH .. QUERY, 3)
      local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
      assert.is_nil(record)
      assert_refused(err, "refused a redirect from https to http")
      assert.equal(1, #emu.requests())
      -- The plain-HTTP server never saw the request.
      local session = curl_core.session {}
      local status, _, body = session:perform { url = plain.base_url .. "/_emulator/requests" }
      session:close()
      assert.equal(200, status)
      assert.equal("[]", body)
      client:close()
    end)

    it("follow_redirects: more than 5 is an error (kind \"protocol\"), not retried", function()
      local client = emu.client { ca_file = emu.ca_file, follow_redirects = true, max_retries = 2,
                                  sleep = function() error("no retry expected") end }
      redirect(307, emu.base_url .. PATH .. QUERY, 20)
      local _, err = client.unified_api:get("crm", "opportunities", ID, Q)
      assert_refused(err, "more than 5 redirects")
      assert.equal(6, #emu.requests())
      client:close()
    end)
  end)
end)
