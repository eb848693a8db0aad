-- POST /v1/payments/<id>/refund of 0.01 on a random payment the generator made SUCCESS, with a new
-- key each time. Arguments: ROWS, STAMP, RUN (RUN is new for every wrk run). Generated amounts are
-- at least 5.00, so 0.01 always fits.
dofile("bench/lua/report.lua")
local counter, rows, stamp, run = 0, 1000, "0", "0"
function init(args)
  rows = tonumber(args[1]) or rows
  stamp = args[2] or "0"
  run = args[#args]
  math.randomseed(os.time() + tid * 7919 + (tonumber(run) or 0))
end
function request()
  counter = counter + 1
  -- bench/bench.py makes every payment SUCCESS except ids divisible by 50 (FAILED) or 97 (PENDING).
  local id
  repeat id = math.random(1, rows) until id % 50 ~= 0 and id % 97 ~= 0
  local body = string.format('{"idempotency_key":"refund-%s-%s-%d-%d","amount":0.01,"reason":"bench"}',
    stamp, run, tid, counter)
  return wrk.format("POST", "/v1/payments/" .. id .. "/refund", {["Content-Type"] = "application/json"}, body)
end
