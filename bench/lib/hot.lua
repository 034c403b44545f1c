-- wrk script: every request carries the same X-API-Key ("hot"), so after the first `limit`
-- requests of each second the key is over its limit: the rate limiter's 429 path.
--   wrk -t1 -c64 -d10s -s bench/lib/hot.lua http://127.0.0.1:PORT/limit
-- The request is static (no request() function), the cheapest wrk mode.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "status.lua")

wrk.method = "GET"
wrk.headers["X-API-Key"] = "hot"
