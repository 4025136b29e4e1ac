-- The line every wrk script of contrib/bench prints when wrk is done, for
-- the shell scripts to read (sed -n 's/^BENCHJSON //p'): loaded by each
-- script with
--   dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
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
