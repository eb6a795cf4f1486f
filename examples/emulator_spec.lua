-- Testing your own code against the Truto emulator, with busted:
--
--   busted examples/emulator_spec.lua
--
-- truto.emulator starts a local, stateful stand-in for Truto's API (nginx
-- with the Lua module, on a loopback port) and stops it again; it needs
-- Debian's nginx-light and libnginx-mod-http-lua (or OpenResty).
local truto = require "truto"
local emulator = require "truto.emulator"

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d" -- an integrated account of the emulator

-- The code under test: renames a deal in the customer's CRM.
local function rename_deal(client, id, name)
  return client.unified_api:update("crm", "opportunities", id, { name = name },
    { integrated_account_id = ACCOUNT })
end

describe("rename_deal", function()
  local server, client

  setup(function()
    server = assert(emulator.start())
    client = truto.new { token = "test-token", base_url = server.base_url,
                         retry = { base = 0.01 } }   -- short waits between retries
  end)

  teardown(function()
    client:close()
    server:stop()
  end)

  before_each(function()
    assert(server:reset())   -- the fixtures again, no faults, an empty request log
  end)

  it("sends one PATCH with the new name", function()
    local deal = assert(rename_deal(client, "23423523", "Renewal 2027"))
    assert.equal("Renewal 2027", deal.name)

    local requests = assert(server:requests())
    assert.equal(1, #requests)
    assert.equal("PATCH", requests[1].method)
    assert.equal("/unified/crm/opportunities/23423523", requests[1].path)
    assert.equal('{"name":"Renewal 2027"}', requests[1].body)
  end)

  it("survives a rate limit: the PATCH is retried under the same Idempotency-Key", function()
    assert(server:faults { { method = "PATCH", status = 429, retry_after = "0", count = 1 } })
    local deal, response = assert(rename_deal(client, "23423523", "After a 429"))
    assert.equal("After a 429", deal.name)
    assert.equal(2, response.attempts)

    local requests = assert(server:requests())
    assert.equal(requests[1].headers["idempotency-key"], requests[2].headers["idempotency-key"])
  end)

  it("reports a deal that does not exist", function()
    local deal, err = rename_deal(client, "no-such-deal", "x")
    assert.is_nil(deal)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
  end)
end)
