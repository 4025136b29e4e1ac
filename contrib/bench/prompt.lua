-- wrk script: POST a registry-prompt request, a different user each time
-- (BENCH_USERS of them), so a running experiment assigns arms; prints one
-- machine-readable line like post.lua.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a"):gsub("%s+$", "")
f:close()
local users = tonumber(os.getenv("BENCH_USERS") or "2000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local b = body:gsub("USER", "u" .. (n % users))
  return wrk.format(nil, nil, nil, b)
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
