-- wrk script of the benchmark harness (bench/rest.py).
--   BENCH_TOKEN  the admin token, sent as `Authorization: Bearer`
--   BENCH_PATHS  a file with one request path per line, requested round-robin
-- At the end it prints one JSON line: counts and latency percentiles in microseconds.
local token = os.getenv("BENCH_TOKEN")
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end
local headers = { ["Authorization"] = "Bearer " .. token, ["Accept"] = "application/json" }
local i = 0

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors_status":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"mean":%.1f,"max":%d,"min":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max, latency.min))
end
