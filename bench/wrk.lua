-- wrk script of the benchmark harness (bench/rest.py).
--   BENCH_TOKEN  the admin token, sent as `Authorization: Bearer`
--   BENCH_PATHS  a file with one request path per line, requested round-robin
--   BENCH_STATUSES  "1": count responses by status code too (wrk then parses every response's
--                   headers and body, which costs it time: only for runs that need the codes)
-- At the end it prints one JSON line: counts and latency percentiles in microseconds.
local token = os.getenv("BENCH_TOKEN")
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end
local headers = { ["Authorization"] = "Bearer " .. token, ["Accept"] = "application/json" }
local i = 0

local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
end

if os.getenv("BENCH_STATUSES") == "1" then
  statuses = {}
  response = function(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end

done = function(summary, latency, requests)
  local e = summary.errors
  -- Each thread keeps its own counts (its own Lua state): summed here.
  local counts = {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses") or {}) do
      counts[code] = (counts[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%s":%d', code, n)
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors_status":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"mean":%.1f,"max":%d,"min":%d,' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max, latency.min, table.concat(parts, ",")))
end
