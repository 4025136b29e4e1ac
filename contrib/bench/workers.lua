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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"non2xx":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6), e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
