-- Shared by the wrk scripts in bench/lib: counts response statuses per thread in
-- response() and prints one machine-readable line from done():
--   BENCH_JSON {"requests":N,"duration_us":N,"p50_us":N,"p99_us":N,...,"status":{"200":N,...}}
-- bench/run parses that line. Loaded with dofile() by keys.lua and hot.lua.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

counts = {}

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
   local mix = {}
   for _, t in ipairs(threads) do
      local c = t:get("counts")
      if c then
         for k, v in pairs(c) do
            mix[k] = (mix[k] or 0) + v
         end
      end
   end
   local parts = {}
   for k, v in pairs(mix) do
      table.insert(parts, string.format('"%d":%d', k, v))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"status":{%s}}\n',
      summary.requests, summary.duration,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
