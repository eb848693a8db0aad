-- GET /v1/payments/<id> with a random id in 1..ROWS (wrk ... -- ROWS).
dofile("bench/lua/report.lua")
local rows = 1000
function init(args)
  rows = tonumber(args[1]) or rows
  math.randomseed(os.time() + (tonumber(args[#args]) or 0) * 7919)
end
function request()
  return wrk.format("GET", "/v1/payments/" .. math.random(1, rows))
end
