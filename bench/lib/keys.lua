-- wrk script: every request carries a different X-API-Key, rotating over NKEYS keys
-- ("k0" .. "k<NKEYS-1>"). Each wrk thread starts at its own offset (thread id * NKEYS /
-- THREADS) so threads do not send the same key at the same time; the rotation within a
-- thread is shared by that thread's connections (wrk's Lua API has no per-connection state),
-- so consecutive requests of a thread, whichever connection sends them, use consecutive keys.
--   wrk -t1 -c64 -d10s -s bench/lib/keys.lua http://127.0.0.1:PORT/limit -- NKEYS THREADS [DELAY_MS]
-- DELAY_MS (optional, may be fractional): pause per connection between a response and the
-- next request, for a paced load (bench/soak); dithered between floor and ceil so that the
-- mean pause is DELAY_MS although wrk's timer has 1 ms resolution.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "status.lua")

local nkeys, nthreads, pause = 100000, 1, nil
local i = 0
local head, tail

function init(args)
   nkeys = tonumber(args[1]) or nkeys
   nthreads = tonumber(args[2]) or nthreads
   pause = tonumber(args[3])
   i = math.floor((id or 0) * nkeys / nthreads)
   -- Build the request once around a placeholder; each request only concatenates the key.
   local req = wrk.format("GET", wrk.path, { ["X-API-Key"] = "\1" })
   head, tail = req:match("^(.-)\1(.*)$")
   if pause then
      -- defined only when pacing, so that the unpaced benchmark pays nothing for it
      math.randomseed(1000 + (id or 0))
      local lo = math.floor(pause)
      local frac = pause - lo
      delay = function()
         if math.random() < frac then return lo + 1 end
         return lo
      end
   end
end

function request()
   local r = head .. "k" .. i .. tail
   i = i + 1
   if i >= nkeys then i = 0 end
   return r
end
