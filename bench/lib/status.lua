-- Shared by the wrk scripts in bench/lib: prints one machine-readable line from done():
--   BENCH_JSON {"requests":N,"duration_us":N,"p50_us":N,"p99_us":N,...,"status":{...}}
-- bench/run and bench/soak parse that line. Loaded with dofile() by keys.lua and hot.lua.
-- Unpaced (bench/run), there is no response() callback: with one, wrk builds a Lua table of every
-- response's headers and body, which made the client core the bottleneck (h1-hot: 86,600 ->
-- 122,400 req/s for ratelimitd-mc without it), so servers were compared at different loads. The
-- status is then split by wrk's own count of responses with a status of 400 or more
-- (summary.errors.status): {"<400":N,">=400":N}; ratelimitd's /metrics tells 429s from other
-- errors. A paced load (bench/soak) has the client time to spare and counts every status:
-- count_statuses() installs response(), {"200":N,"429":N,...}.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

counts = {}

function count_statuses()
   function response(status, headers, body)
      counts[status] = (counts[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local parts = {}
   for _, t in ipairs(threads) do
      local c = t:get("counts")
      for k, v in pairs(c or {}) do
         parts[k] = (parts[k] or 0) + v
      end
   end
   local mix = {}
   for k, v in pairs(parts) do
      table.insert(mix, string.format('"%d":%d', k, v))
   end
   if #mix == 0 then
      mix = { string.format('"<400":%d,">=400":%d', summary.requests - e.status, e.status) }
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"status":{%s}}\n',
      summary.requests, summary.duration,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(mix, ",")))
end
