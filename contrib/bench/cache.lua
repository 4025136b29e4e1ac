-- wrk script for contrib/bench/cache.sh: POST a chat request; with
-- BENCH_UNIQUE=1 every request has its own prompt (a cache miss each).
local unique = os.getenv("BENCH_UNIQUE") == "1"
local n = 0
local id = tostring(math.random(1, 1e9))
local head = '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Write a product description for item '
local tail = '."}]}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = head .. "fixed" .. tail

function request()
  if not unique then return wrk.request() end
  n = n + 1
  return wrk.format(nil, nil, nil, head .. id .. "-" .. n .. tail)
end

-- the BENCHJSON line (report.lua, beside this file)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
