-- The handlers of spec/fleet/nginx.conf.in.  /start stores a run's config
-- in the shared dict; each worker's timer sees it and runs the fleet
-- worker in a timer of its own, then stores its tally under the run.
local truto = require "truto"
local fleet_worker = require "spec.support.fleet_worker"

local _M = {}

local dict = ngx.shared.fleet
local started = {}   -- run ids this worker has started

local function now()
  ngx.update_time()
  return ngx.now()
end

local function run(premature, id, config)
  if premature then return end
  local ok, tally = pcall(fleet_worker.run, config, now)
  if not ok then tally = { error = tostring(tally) } end
  tally.pid = ngx.worker.pid()
  dict:set("result:" .. id .. ":" .. ngx.worker.id(), truto.encode_json(tally))
end

local function watch(premature)
  if premature then return end
  local id = dict:get("run")
  if id and not started[id] then
    started[id] = true
    local config = truto.decode_json(dict:get("config:" .. id))
    config.offset = ngx.worker.id()
    ngx.timer.at(0, run, id, config)
  end
  ngx.timer.at(0.02, watch)
end

function _M.init_worker()
  ngx.timer.at(0, watch)
end

function _M.start()
  ngx.req.read_body()
  local config = ngx.req.get_body_data()
  local id = dict:incr("runs", 1, 0)
  dict:set("config:" .. id, config)
  dict:set("run", id)
  ngx.say(truto.encode_json { id = id })
end

function _M.results()
  local id = ngx.var.arg_id
  local out = truto.array()
  for worker = 0, ngx.worker.count() - 1 do
    local tally = dict:get("result:" .. id .. ":" .. worker)
    if tally then out[#out + 1] = truto.decode_json(tally) end
  end
  ngx.say(truto.encode_json(out))
end

return _M
