-- POST /v1/payments/charge: every request a new idempotency key and a new trip.
-- Arguments: RUN (a number bench.py makes new for every wrk run).
dofile("bench/lua/report.lua")
local counter, run = 0, 1
function init(args)
  run = tonumber(args[#args]) or 1
end
function request()
  counter = counter + 1
  -- Far above the generated trips; unique per wrk run, thread and request (exact in a double).
  local trip = 1000000000000 + run * 100000000 + tid * 10000000 + counter
  return trip_request("/v1/payments/charge", "bench", run, counter, trip)
end
