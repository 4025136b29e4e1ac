-- wrk script: POST the bench request; print one machine-readable line.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a"):gsub("%s+$", "")
f:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end

-- the BENCHJSON line (report.lua, beside this file)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
