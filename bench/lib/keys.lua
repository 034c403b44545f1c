-- wrk script: every request carries a different X-API-Key, rotating over NKEYS keys
-- ("k0" .. "k<NKEYS-1>"). Each wrk thread starts at its own offset (thread id * NKEYS /
-- THREADS) so threads do not send the same key at the same time; the rotation within a
-- thread is shared by that thread's connections (wrk's Lua API has no per-connection state),
-- so consecutive requests of a thread, whichever connection sends them, use consecutive keys.
--   wrk -t1 -c64 -d10s -s bench/lib/keys.lua http://127.0.0.1:PORT/limit -- NKEYS THREADS [RATE [PREFIX]]
-- PREFIX (default "k"): the keys' first letters. bench/run's warm-up uses its own, so that the
-- measured run that follows it does not start on keys the warm-up has just sent (nginx's leaky
-- bucket would answer those 429 and the others would not).
-- RATE (optional, requests per second for the whole wrk run): paced load for bench/soak. Each
-- thread hands out send times RATE/THREADS per second apart (monotonic clock through LuaJIT's
-- ffi); a connection waits for its slot in delay(). A thread that falls behind (late timers,
-- a slow server) sends at once and makes up at most 10 ms of lateness, so a stall never turns
-- into more than a 10 ms burst.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "status.lua")

local nkeys, nthreads, rate, prefix = 100000, 1, nil, "k"
local i = 0
local head, tail

function init(args)
   nkeys = tonumber(args[1]) or nkeys
   nthreads = tonumber(args[2]) or nthreads
   rate = tonumber(args[3])
   prefix = args[4] or prefix
   i = math.floor((id or 0) * nkeys / nthreads)
   -- Build the request once around a placeholder; each request only concatenates the key.
   local req = wrk.format("GET", wrk.path, { ["X-API-Key"] = "\1" })
   head, tail = req:match("^(.-)\1(.*)$")
   if rate and rate > 0 then
      count_statuses() -- paced: the client has time to spare for it (status.lua)
      -- defined only when pacing, so that the unpaced benchmark pays nothing for it
      local ffi = require("ffi")
      pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } rl_bench_ts_t;"
                   .. "int clock_gettime(int, rl_bench_ts_t *);")
      local ts = ffi.new("rl_bench_ts_t")
      local function now_ms()
         ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
         return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
      end
      local interval = 1000 * nthreads / rate -- ms between two sends of this thread
      local last = 0
      math.randomseed(1000 + (id or 0))
      delay = function()
         local now = now_ms()
         local slot = last + interval
         if slot < now - 10 then slot = now - 10 end -- at most 10 ms of lateness is made up
         last = slot
         -- wrk's timers have 1 ms resolution: dither so that the mean wait is exact
         local wait = slot - now
         local lo = math.floor(wait)
         if math.random() < wait - lo then return lo + 1 end
         return lo
      end
   end
end

function request()
   local r = head .. prefix .. i .. tail
   i = i + 1
   if i >= nkeys then i = 0 end
   return r
end
