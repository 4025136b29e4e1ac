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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"non2xx":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6), e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean))
end
