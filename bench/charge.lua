-- wrk script: every request is a new charge (unique idempotency key, unique trip id).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  created, accepted, other = 0, 0, 0
  run = tostring(os.time())
end

function request()
  counter = counter + 1
  local trip = tid * 100000000 + counter
  local body = string.format(
    '{"idempotency_key":"bench-%s-%d-%d","trip_id":%d,"method":"CARD","rider_id":7}', run, tid, counter, trip)
  return wrk.format("POST", "/v1/payments/charge", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status == 201 then created = created + 1
  elseif status == 202 then accepted = accepted + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local c, a, o = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); a = a + t:get("accepted"); o = o + t:get("other")
  end
  io.write(string.format("charges/s %.1f   p50 %.2f ms   p99 %.2f ms   201=%d 202=%d other=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    c, a, o))
end
