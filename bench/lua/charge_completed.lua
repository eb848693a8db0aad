-- POST /v1/payments/charge of completed trips (ids not multiples of 3) from bench/holds.py's trip
-- service, so the charge pays the same trip look-up as the hold operations. Arguments: RUN.
dofile("bench/lua/report.lua")
local counter, run = 0, 1
function init(args)
  run = tonumber(args[#args]) or 1
end
function request()
  counter = counter + 1
  local trip = 3 * (1000000000000 + run * 100000000 + tid * 10000000 + counter) + 1
  return trip_request("/v1/payments/charge", "charge", run, counter, trip)
end
