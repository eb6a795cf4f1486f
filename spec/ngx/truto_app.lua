--- Handlers of the app server that spec/ngx_spec.lua starts (see
-- spec/ngx/nginx.conf.in).  They run inside nginx (LuaJIT) and use the
-- library as an application would: `truto.new{}` with no transport option,
-- so the choice of the cosocket transport is the library's own.
local truto = require "truto"

local _M = {}

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local WEBHOOK_SECRET = "s3cret"
local Q = { integrated_account_id = ACCOUNT }

local results = ngx.shared.truto_app

-- One client per worker, created on first use: the ngx transport keeps no
-- socket of its own between calls (connections go back to nginx's pool), so
-- concurrent requests can share it.
local shared_client
local function worker_client()
  if not shared_client then shared_client = truto.new {} end
  return shared_client
end

local function send_json(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(truto.encode_json(value))
end

local function error_value(err)
  return { error = { kind = err.kind, status = err.status, message = err.message, attempts = err.attempts,
                     text = tostring(err) } }
end

-- An upstream failure: the upstream's status when there was one, else 502.
local function send_error(err)
  return send_json(err.kind == "http" and err.status or 502, error_value(err))
end

local function read_json_body()
  ngx.req.read_body()
  local text = ngx.req.get_body_data()
  if not text then return nil, "no body" end
  return truto.decode_json(text)
end

function _M.worker()
  local memory = require "spec.support.memory"
  send_json(200, { pid = ngx.worker.pid(), rss_kb = memory.kb("VmRSS"), hwm_kb = memory.kb("VmHWM"),
                   libcurl = memory.mapped("libcurl") })
end

function _M.transport()
  local client = truto.new {}
  send_json(200, { ngx = getmetatable(client.transport).__index == require("truto.ngx") })
end

-- (1) PATCH /opportunity?id=ID: the seed's update, from a content handler.
function _M.update()
  local body, err = read_json_body()
  if not body then return send_json(400, { error = { message = "bad JSON body: " .. tostring(err) } }) end
  local client = truto.new {}
  local record, response = client.unified_api:update("crm", "opportunities", ngx.var.arg_id, body, Q)
  if not record then return send_error(response) end
  ngx.header["X-Truto-Attempts"] = response.attempts
  ngx.header["X-Truto-Upstream-Status"] = response.status
  send_json(200, record)
end

-- (5) GET /opportunity/get?id=ID
function _M.get()
  local record, response = worker_client().unified_api:get("crm", "opportunities", ngx.var.arg_id, Q)
  if not record then return send_error(response) end
  ngx.header["X-Truto-Attempts"] = response.attempts
  send_json(200, record)
end

-- (2) GET /opportunities?limit=N: every record, page after page.
function _M.list_all()
  local ids = truto.array()
  local query = { integrated_account_id = ACCOUNT, limit = tonumber(ngx.var.arg_limit) or 10 }
  for record, err in worker_client().unified_api:each("crm", "opportunities", query) do
    if not record then return send_error(err) end
    ids[#ids + 1] = record.id
  end
  send_json(200, { count = #ids, ids = ids })
end

-- (3) GET /blob?bytes=N: the body goes to the client chunk by chunk, never
-- held whole.  ngx.flush(true) waits until nginx has written each chunk, so
-- a slow reader slows the upstream read instead of filling memory.
function _M.blob()
  local started = false
  local function sink(chunk)
    if not started then
      started = true
      ngx.header["Content-Type"] = "application/json"
    end
    local ok, err = ngx.print(chunk)
    if not ok then return nil, err end
    return ngx.flush(true)
  end
  local client = truto.new {}
  local ok, err = client.custom_api:get("blob", { integrated_account_id = ACCOUNT, bytes = ngx.var.arg_bytes },
                                        { sink = sink })
  if not ok then
    if started then   -- too late for a status: cut the response short
      ngx.log(ngx.ERR, "blob stream failed: ", tostring(err))
      return ngx.exit(ngx.ERROR)
    end
    return send_error(err)
  end
  if not started then ngx.header["Content-Type"] = "application/json" end
end

-- (6) GET /slow?delay_ms=N: one upstream call that the emulator holds for N ms.
function _M.slow()
  local record, response = worker_client().unified_api:get("crm", "opportunities", "23423523", Q, {
    headers = { ["X-Emulator-Delay-Ms"] = ngx.var.arg_delay_ms or "500" },
  })
  if not record then return send_error(response) end
  send_json(200, { id = record.id, attempts = response.attempts })
end

-- GET /batch?n=N&delay_ms=D&concurrency=C: N upstream calls through
-- client:batch, which runs them on ngx.thread light threads.
function _M.batch()
  local n = tonumber(ngx.var.arg_n) or 10
  local requests = {}
  for i = 1, n do
    requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                    id = tostring(10000002 + i), body = { amount = i }, query = Q,
                    opts = { headers = { ["X-Emulator-Delay-Ms"] = ngx.var.arg_delay_ms or "0" } } }
  end
  local progress = 0
  local outcomes = worker_client():batch(requests, {
    concurrency = tonumber(ngx.var.arg_concurrency) or 16,
    on_progress = function(done) progress = done end,
  })
  local amounts = {}
  for i, r in ipairs(outcomes) do
    if not r[1] then return send_error(r[2]) end
    amounts[i] = r[1].amount
  end
  send_json(200, { amounts = amounts, progress = progress })
end

-- GET /bodiless: the writes without a body of spec/support/bodiless.lua,
-- whose request log the spec checks; answers their statuses.
function _M.bodiless()
  send_json(200, { statuses = require("spec.support.bodiless").calls(truto.new {}, ACCOUNT) })
end

-- (4) POST /webhook: refused in the access phase unless X-Truto-Signature
-- matches the raw body, under the secret PUT /webhook/secret set (by default
-- "s3cret").  The last accepted delivery is kept for GET /webhook/received.
function _M.webhook_access()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    if ngx.req.get_body_file() then   -- larger than client_body_buffer_size
      send_json(413, { error = "webhook body too large" })
      return ngx.exit(413)
    end
    body = ""
  end
  local secret = results:get("webhook_secret") or WEBHOOK_SECRET
  local ok, reason = truto.verify_webhook(secret, body, ngx.var.http_x_truto_signature)
  if not ok then
    send_json(401, { error = "invalid webhook signature", reason = reason })
    return ngx.exit(401)
  end
end

function _M.webhook_content()
  local body = ngx.req.get_body_data() or ""
  local event = truto.decode_json(body)
  results:set("webhook_received", truto.encode_json { body = body, user_agent = ngx.var.http_user_agent or "",
                                                       content_type = ngx.var.content_type or "" })
  send_json(200, { received = true, event = type(event) == "table" and event.event or truto.null })
end

function _M.webhook_secret()
  ngx.req.read_body()
  results:set("webhook_secret", ngx.req.get_body_data() or "")
  results:delete("webhook_received")
  send_json(200, { ok = true })
end

function _M.webhook_received()
  local received = results:get("webhook_received")
  if not received then return send_json(404, { error = "nothing received" }) end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(received)
end

-- GET /platform: every platform method once (spec/support/platform_calls.lua);
-- answers the outcomes and the ids the calls kept.
function _M.platform()
  local outcomes, ids = require("spec.support.platform_calls").run(truto.new {})
  send_json(200, { outcomes = outcomes, ids = ids })
end

-- (5) Calls where nginx has no cosockets.  The outcome is kept in a shared
-- dict for GET /phase-results.
local function record_call(name)
  local ok, record, err = pcall(function()
    local client = truto.new {}
    return client.unified_api:get("crm", "opportunities", "23423523", Q)
  end)
  local value
  if not ok then
    value = { raised = tostring(record) }
  elseif record then
    value = { id = record.id }
  else
    value = { kind = err.kind, message = err.message, text = tostring(err) }
  end
  results:set(name, truto.encode_json(value))
end

function _M.init_worker()
  record_call("init_worker")
  -- The workaround the error names: the same call from a timer.
  local ok, err = ngx.timer.at(0, function(premature)
    if not premature then record_call("timer") end
  end)
  if not ok then results:set("timer", truto.encode_json({ raised = tostring(err) })) end
end

function _M.call_in_log()
  record_call("log")
end

function _M.phase_results()
  local out = {}
  for _, name in ipairs({ "init_worker", "timer", "log" }) do
    local text = results:get(name)
    out[name] = text and truto.decode_json(text) or truto.null
  end
  send_json(200, out)
end

-- (8) GET /tls/...: the emulator over https.
function _M.tls_get(options)
  local base_url = os.getenv("TRUTO_TLS_BASE_URL")
  if not base_url or not base_url:match("^https://") then
    return send_json(501, { error = { message = "no https emulator" } })
  end
  options = options or {}
  local client = truto.new { base_url = base_url, max_retries = 0, insecure = options.insecure, pool = options.pool }
  local record, response = client.unified_api:get("crm", "opportunities", "23423523", Q)
  if not record then return send_error(response) end
  send_json(200, { id = record.id })
end

-- GET /large-update?id=ID&bytes=N: bench.support's large body of about N
-- bytes (a truto.Body once built: over 1 MiB) sent from inside nginx as
-- an update; answered as { status, attempts, bytes = the JSON's length }.
function _M.large_update()
  local body = require("bench.support").large_body(tonumber(ngx.var.arg_bytes))
  local client = truto.new { retry = { base = 0.01 }, timeout = 120 }
  local record, response = client.unified_api:update("crm", "opportunities", ngx.var.arg_id, body, Q)
  if not record then return send_error(response) end
  send_json(200, { status = response.status, attempts = response.attempts, bytes = #truto.encode_json(body) })
end

-- GET /upload?case=NAME&dir=DIR: a case of spec/support/uploads.lua through
-- the cosocket transport, answered as the outcome's JSON.
function _M.upload()
  local uploads = require "spec.support.uploads"
  if not uploads.CASES[ngx.var.arg_case or ""] then return send_json(404, { error = "no such case" }) end
  local client = truto.new { retry = { base = 0.01 }, timeout = 120 }
  send_json(200, uploads.run(ngx.var.arg_case, client, ngx.unescape_uri(ngx.var.arg_dir)))
end

-- GET /conformance?case=SLUG&base=URL: a case of the conformance table
-- through the cosocket transport, answered as the outcome's JSON.
local conformance_runs = 0
function _M.conformance()
  local cases = require "spec.support.hostile.cases"
  local case = cases.by_slug[ngx.var.arg_case or ""]
  if not case then return send_json(404, { error = "no such case" }) end
  conformance_runs = conformance_runs + 1
  -- A pool per run: no connection is reused from one case to the next.
  local outcome = cases.run(case, ngx.unescape_uri(ngx.var.arg_base), { pool = "conformance-" .. conformance_runs },
    function()
      ngx.update_time()
      return ngx.now()
    end)
  send_json(200, outcome)
end

return _M
