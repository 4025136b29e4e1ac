-- wrk script: POST a registry-prompt request, a different user each time
-- (BENCH_USERS of them), so a running experiment assigns arms; prints one
-- machine-readable line like post.lua.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a"):gsub("%s+$", "")
f:close()
local users = tonumber(os.getenv("BENCH_USERS") or "2000")
local reqs = {}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- every user's request formatted once: request() must cost wrk next to
-- nothing, or wrk (not the gateway) sets the pace
init = function(args)
  for u = 1, users do
    local b = body:gsub("USER", "u" .. u)
    reqs[u] = wrk.format(nil, nil, nil, b)
  end
end

request = function()
  n = n % users + 1
  return reqs[n]
end

-- the BENCHJSON line (report.lua, beside this file)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
