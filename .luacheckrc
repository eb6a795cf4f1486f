std = "lua54"
max_line_length = 120
files["spec"] = { std = "+busted", max_line_length = 140 }
exclude_files = { "build" }
files["emulator/lua"] = { std = "luajit", globals = { "ngx" } }  -- handlers set ngx.status, ngx.header
files["lua/truto/ngx.lua"] = { read_globals = { "ngx" } }
files["spec/ngx"] = { std = "luajit", globals = { "ngx" } }
files["spec/support/hostile/server.lua"] = { std = "luajit", globals = { "ngx" } }
-- Run inside Neovim, whose `vim` module is a global; its LuaJIT.
files["examples/neovim"] = { std = "luajit", read_globals = { "vim" } }
files["spec/support/neovim_calls.lua"] = { std = "luajit", read_globals = { "vim" } }
files["examples/haproxy"] = { std = "lua53", read_globals = { "core" } }  -- HAProxy's
