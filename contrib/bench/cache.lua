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
