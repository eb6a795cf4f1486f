std = "lua54"
-- What is installed runs on every Lua: only what 5.1, 5.2, 5.3, 5.4 and LuaJIT all have.
files["lua"] = { std = "min" }
-- HAProxy 2.6 embeds Lua 5.3: its transport runs nowhere else.
files["lua/truto/haproxy.lua"] = { std = "lua53" }
files["bin"] = { std = "min" }
max_line_length = 120
files["spec"] = { std = "+busted", max_line_length = 140 }
exclude_files = { "build" }
files["emulator/lua"] = { std = "luajit", globals = { "ngx" } }  -- handlers set ngx.status, ngx.header
files["lua/truto/ngx.lua"] = { read_globals = { "ngx" } }
files["spec/ngx"] = { std = "luajit", globals = { "ngx" } }
files["spec/fleet"] = { std = "luajit", read_globals = { "ngx" } }
files["spec/support/hostile/server.lua"] = { std = "luajit", globals = { "ngx" } }
-- Run inside Neovim, whose `vim` module is a global; its LuaJIT.
files["examples/neovim"] = { std = "luajit", read_globals = { "vim" } }
files["spec/support/neovim_calls.lua"] = { std = "luajit", read_globals = { "vim" } }
files["examples/haproxy"] = { std = "lua53", read_globals = { "core" } }  -- HAProxy's
