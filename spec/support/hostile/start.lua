--- The hostile server of the conformance table (spec/support/hostile/),
-- with its TLS servers: each a certificate of its own, signed by the
-- server's CA unless said otherwise, on a port next to the plain one.
-- spec/conformance_spec.lua plays the table against it; spec/tls_core_spec.lua
-- checks truto.tls's verification against the TLS servers.
local ngx_app = require "spec.support.ngx_app"
local sh = require "spec.support.shell"

local _M = {}

local REPO = ngx_app.REPO

-- TLS servers by name: their offset from the plain port and certificate.
local TLS = { { "ip", 1 }, { "wrong-host", 2 }, { "expired", 3 }, { "untrusted", 4 } }

-- Certificates and payloads, made in the hostile server's temp dir (the CA
-- comes from truto.emulator.nginx).
local function prepare(prefix)
  local q = function(name) return sh.quote(prefix .. "/" .. name) end
  local key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local function signed(name, san, days)
    return table.concat({
      "echo " .. sh.quote("subjectAltName = " .. san) .. " > " .. q(name .. ".ext"),
      "openssl req -new -subj /CN=" .. name .. key .. " -keyout " .. q(name .. ".key") .. " -out " .. q(name .. ".csr"),
      "openssl x509 -req -sha256 -days " .. days .. " -in " .. q(name .. ".csr") .. " -CA " .. q("ca.pem")
        .. " -CAkey " .. q("ca.key") .. " -set_serial " .. math.random(1, 2 ^ 30) .. " -extfile " .. q(name .. ".ext")
        .. " -out " .. q(name .. ".pem"),
    }, " && ")
  end
  local commands = {
    -- Not named 127.0.0.1 in its subject: only the IP address SAN can match.
    signed("ip", "IP:127.0.0.1", 2),
    signed("wrong-host", "DNS:wrong.example", 2),
    signed("expired", "IP:127.0.0.1", -1),
    "openssl req -x509 -sha256 -days 2 -subj /CN=untrusted -addext 'subjectAltName = IP:127.0.0.1'" .. key
      .. " -keyout " .. q("untrusted.key") .. " -out " .. q("untrusted.pem"),
    "head -c 67108864 /dev/zero | gzip -1 > " .. q("bomb.gz"),
    "seq 1 4000 | gzip -9 > " .. q("text.gz"),
    "printf '{\"gzipped\":true}' | gzip > " .. q("json.gz"),
  }
  for _, command in ipairs(commands) do
    if not sh.run("(" .. command .. ") >>" .. q("prepare.log") .. " 2>&1") then
      return nil, "failed: " .. command .. "\n" .. (sh.read_file(prefix .. "/prepare.log") or "")
    end
  end
  return true
end

local function tls_servers(port, prefix)
  local blocks = {}
  for _, server in ipairs(TLS) do
    local name, offset = server[1], server[2]
    blocks[#blocks + 1] = table.concat({
      "    server {",
      "        listen 127.0.0.1:" .. port + offset .. " ssl;",
      "        ssl_certificate " .. prefix .. "/" .. name .. ".pem;",
      "        ssl_certificate_key " .. prefix .. "/" .. name .. ".key;",
      "        location / { content_by_lua_block { require(\"spec.support.hostile.server\").serve() } }",
      "    }",
    }, "\n")
  end
  return table.concat(blocks, "\n")
end

--- Starts the hostile nginx (its CA: the handle's `ca_file`).  Raises on failure.
---@return table server a truto.emulator.nginx handle
function _M.start()
  return ngx_app.start_server {
    template = REPO .. "/spec/support/hostile/nginx.conf.in", kind = "truto-hostile",
    certificates = "IP:127.0.0.1", prepare = prepare,
    values = function(port, prefix) return { REPO = REPO, TLS_SERVERS = tls_servers(port, prefix) } end,
  }
end

--- The port of the TLS server `name` ("ip", "wrong-host", "expired", "untrusted").
---@param server table from start
---@param name string
---@return integer port
function _M.tls_port(server, name)
  for _, tls in ipairs(TLS) do
    if tls[1] == name then return server.port + tls[2] end
  end
  error("no TLS server " .. name)
end

return _M
