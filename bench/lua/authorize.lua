-- POST /v1/payments/authorize: every request a new idempotency key and a new trip.
-- Trip ids are multiples of 3, which bench/holds.py's trip service answers ACCEPTED at the first
-- look (the authorization) and COMPLETED afterwards (the capture).
-- Arguments: RUN (a number new for every wrk run).
dofile("bench/lua/report.lua")
local counter, run = 0, 1
function init(args)
  run = tonumber(args[#args]) or 1
end
function request()
  counter = counter + 1
  local trip = 3 * (1000000000000 + run * 100000000 + tid * 10000000 + counter)
  return trip_request("/v1/payments/authorize", "hold", run, counter, trip)
end
