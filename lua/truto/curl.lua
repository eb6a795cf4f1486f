--- The libcurl transport: one keep-alive session per client, driven from C.
-- Used everywhere except inside nginx, where a blocking call would stall
-- the worker.  Its `env.tcp()` is a raw TCP socket with nginx's cosocket
-- API (truto.cosocket over truto.curl_core's streams, TLS by truto.tls,
-- kept-alive connections pooled per client), for what speaks a protocol
-- of its own over TCP (the Redis store): it blocks, as this transport does.
local truto_core = require "truto.core"
local cosocket = require "truto.cosocket"
-- session, multi and stream are truto.curl_core's, the C module that links libcurl:
-- it is required at their first use, not with this module, so that a process
-- that never makes a transfer here (inside nginx, say) never loads libcurl.
local core = setmetatable({ sleep = truto_core.sleep, now = truto_core.now }, {
  __index = function(_, name) return require("truto.curl_core")[name] end,
})

local _M = {}
local mt = { __index = _M }

local SESSION_OPTIONS = { "timeout", "connect_timeout", "ca_file", "ca_path", "insecure", "proxy",
  "max_response_bytes", "http2" }

-- The driver of truto.cosocket over libcurl streams: each call blocks for
-- the seconds it is given at most.  A stream connects directly, never
-- through the client's proxy.
local streams = {}

function streams.connect(host, port, seconds)
  local stream = core.stream()
  local ok, err = stream:connect(host, port, seconds)
  if not ok then
    stream:close()
    return nil, err
  end
  return stream
end

function streams.send(stream, data, seconds) return stream:send(data, seconds) end
function streams.receive(stream, max, seconds) return stream:receive(max, seconds) end
function streams.close(stream) stream:close() end
function streams.usable(stream) return stream:usable() end

--- A transport for one client: its libcurl session is made at the first
-- transfer and kept (making a client loads no libcurl), and its `env`, whose
-- sockets load it at their first connect.
---@param options truto.Options the client's, timeouts filled in
---@return table transport
function _M.new(options)
  local session_options = {}
  for _, name in ipairs(SESSION_OPTIONS) do session_options[name] = options[name] end
  local self = setmetatable({ options = session_options, insecure = options.insecure == true }, mt)
  local driver = cosocket.tls(streams, { now = core.now, ca_file = options.ca_file, ca_path = options.ca_path })
  return cosocket.pooled(self, driver, core.now)
end

--- The multi handle batches run on, made on first use and kept, so that its
-- connections stay alive from one batch to the next.
---@return userdata multi
function _M:multi()
  if not self.multi_handle then self.multi_handle = core.multi(self.options) end
  return self.multi_handle
end

--- Sends req ({method, url, headers, body}); call: {timeout,
-- connect_timeout, sink, max_response_bytes, repeatable, decode_json}.
-- Returns status, headers, body, info, or nil, err.  A request that is not
-- repeatable goes on a new connection: on a reused one that dies, libcurl
-- would send it again.  With decode_json, a 2xx JSON object or array comes
-- back decoded (a table in place of the body, whose string is never made);
-- one that is not valid JSON comes back as its first 64 KiB (a large
-- buffer is given back as it is read) and the reader's message, fifth;
-- any other body stays a string.
---@param req table
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string|table|nil body a table when decode_json decoded it
---@return table? info
---@return string? decode_error why a body decode_json took for JSON is not valid
function _M:perform(req, call)
  if not self.session then self.session = core.session(self.options) end   -- after close()
  return self.session:perform {
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    timeout = call.timeout, connect_timeout = call.connect_timeout,
    sink = call.sink, max_response_bytes = call.max_response_bytes,
    fresh_connect = call.repeatable == false, decode_json = call.decode_json,
  }
end

_M.sleep = core.sleep
_M.now = core.now

--- Closes the session, the multi handle, if any, and the kept-alive
-- connections of `env`: their connections are released.  The transport
-- stays usable: the next call opens new ones.
function _M:close()
  if self.session then self.session:close() end
  if self.multi_handle then self.multi_handle:close() end
  self.session, self.multi_handle = nil, nil
  cosocket.close_pooled(self)
end

return _M
