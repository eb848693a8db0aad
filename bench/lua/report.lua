-- Shared by every scenario: number wrk's threads (`tid`, for keys unique per thread) and print one
-- machine-readable line the harness (bench/bench.py) parses.
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end

-- A POST of a charge or authorize body for `trip`, with a key unique per run, thread and request
-- (the scripts that make new trips share it; `counter` is theirs).
function trip_request(path, key_prefix, run, counter, trip)
  local body = string.format(
    '{"idempotency_key":"%s-%d-%d-%d","trip_id":%.0f,"method":"CARD","rider_id":7}', key_prefix, run, tid, counter, trip)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
