-- The services of spec/haproxy_spec.lua and spec/conformance_spec.lua,
-- registered when HAProxy lua-loads this module (spec/support/haproxy.lua):
-- each answers JSON.
--   GET /update?id=ID&amount=N&delay=MS[&tls=NAME]  Truto's "Update
--     Opportunities" on the emulator ($TRUTO_BASE_URL, $TRUTO_API_TOKEN) with
--     one shared client; with tls, on the https emulator
--     ($TRUTO_HTTPS_BASE_URL, its CA $TRUTO_HTTPS_CA_FILE) with the shared
--     client of HTTPS_OPTIONS[NAME];
--   GET /auto  which transport `transport = "auto"` picks here;
--   GET /store?url=REDIS&n=N  N updates paced at 2 a second through the
--     Redis store at REDIS: the seconds they took and their outcomes;
--   GET /batch?delay=MS&n=N  client:batch of N updates;
--   GET /conformance?case=SLUG&base=URL[&batch=1]  a case of the transport
--     conformance table (spec/support/hostile/cases.lua), its https servers
--     verified by $TRUTO_CONFORMANCE_CA_FILE.
local truto = require "truto"
local haproxy = require "truto.haproxy"

local core = rawget(_G, "core")   -- HAProxy's

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local client = truto.new {}   -- made where the script loads: it opens no connection

-- The https clients of /update, by name: made at their first call.
local HTTPS_OPTIONS = {
  verified = { ca_file = os.getenv("TRUTO_HTTPS_CA_FILE") },
  system_ca = {},
  missing_ca = { ca_file = "/nonexistent/ca.pem" },
  insecure = { insecure = true },
  by_name = { base_url = (os.getenv("TRUTO_HTTPS_BASE_URL") or ""):gsub("127%.0%.0%.1", "localhost"),
              ca_file = os.getenv("TRUTO_HTTPS_CA_FILE"), max_retries = 0 },
}
local https_clients = {}

local function https_client(name)
  if not https_clients[name] then
    local options = { base_url = os.getenv("TRUTO_HTTPS_BASE_URL"), max_retries = 2 }
    for k, v in pairs(HTTPS_OPTIONS[name]) do options[k] = v end
    https_clients[name] = truto.new(options)
  end
  return https_clients[name]
end

local function reply(applet, status, value)
  local body = truto.encode_json(value)
  applet:set_status(status)
  applet:add_header("content-type", "application/json")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end

-- The query string's arguments (AppletHTTP's `qs`), percent-decoded.
local function query(applet)
  local args = {}
  for k, v in (applet.qs or ""):gmatch("([^&=]+)=([^&]*)") do
    args[k] = v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  return args
end

local function delayed(ms)
  return { headers = { ["X-Emulator-Delay-Ms"] = ms or "0" } }
end

core.register_service("update", "http", function(applet)
  local args = query(applet)
  local caller = args.tls and https_client(args.tls) or client
  local record, response = caller.unified_api:update("crm", "opportunities", args.id,
    { amount = tonumber(args.amount) }, { integrated_account_id = ACCOUNT }, delayed(args.delay))
  if not record then
    return reply(applet, 502, { kind = response.kind, message = response.message, retryable = response.retryable,
                                attempts = response.attempts })
  end
  reply(applet, 200, { record = record, status = response.status, attempts = response.attempts,
                       reused = response.info.reused })
end)

core.register_service("store", "http", function(applet)
  local args = query(applet)
  local paced = truto.new { max_retries = 0, log = function(message) core.Warning(message) end,
                            rate_limit = { requests = 2, per = 1, margin = 0, store = args.url } }
  local started, out = haproxy.now(), {}
  for i = 1, tonumber(args.n) do
    local record, response = paced.unified_api:update("crm", "opportunities", "23423523", { amount = i },
      { integrated_account_id = ACCOUNT })
    out[i] = record and "ok" or response.kind .. ": " .. response.message
  end
  paced:close()
  reply(applet, 200, { seconds = haproxy.now() - started, outcomes = out })
end)

core.register_service("auto", "http", function(applet)
  reply(applet, 200, { haproxy = client.transport.perform == haproxy.perform })
end)

core.register_service("batch", "http", function(applet)
  local args = query(applet)
  local requests = {}
  for i = 1, tonumber(args.n) do
    requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                    id = tostring(10000002 + i), body = { amount = i },
                    query = { integrated_account_id = ACCOUNT }, opts = delayed(args.delay) }
  end
  local ok, results = pcall(client.batch, client, requests,
    args.fail and { on_progress = function() error("stop here", 0) end } or nil)
  if not ok then return reply(applet, 500, { error = results }) end
  local out = {}
  for i, r in ipairs(results) do out[i] = { id = r[1] and r[1].id, amount = r[1] and r[1].amount } end
  reply(applet, 200, out)
end)

core.register_service("conformance", "http", function(applet)
  local cases = require "spec.support.hostile.cases"
  local args = query(applet)
  local case = cases.by_slug[args.case or ""]
  if not case then return reply(applet, 404, { error = "no such case" }) end
  local ok, outcome = pcall(cases.run, case, args.base,
    { transport = "haproxy", ca_file = os.getenv("TRUTO_CONFORMANCE_CA_FILE") }, haproxy.now, args.batch == "1")
  if not ok then return reply(applet, 500, { error = tostring(outcome) }) end
  reply(applet, 200, outcome)
end)
