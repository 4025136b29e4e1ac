-- wrk script for contrib/bench/workers.sh: POST the same deterministic chat
-- request (a cache hit after the first), BENCH_DEPTH requests pipelined on
-- each write, so that the load generator's cost per request is small next
-- to the gateway's (both share the machine's two cores).
local depth = tonumber(os.getenv("BENCH_DEPTH") or "1")
local key = os.getenv("BENCH_KEY")
local body = '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Write a product description for item fixed."}]}'
local req

function init(args)
  local h = {["Content-Type"] = "application/json"}
  if key and key ~= "" then h["Authorization"] = "Bearer " .. key end
  local r = {}
  for i = 1, depth do r[i] = wrk.format("POST", nil, h, body) end
  req = table.concat(r)
end

function request()
  return req
end

-- the BENCHJSON line (report.lua, beside this file)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
