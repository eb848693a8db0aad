-- POST /v1/payments/<id>/capture of holds made before the run, each captured once: wrk's threads
-- take the ids FIRST..LAST in turns (thread 1 the odd steps, thread 2 the even ones).
-- Arguments: FIRST, LAST, RUN.
dofile("bench/lua/report.lua")
local counter, first, last = 0, 1, 1
function init(args)
  first = tonumber(args[1])
  last = tonumber(args[2])
end
function request()
  counter = counter + 1
  local id = first + (tid - 1) + 2 * (counter - 1)
  if id > last then
    -- Out of holds: a request that is not a 2xx, so the run shows it as an error.
    id = 0
  end
  return wrk.format("POST", "/v1/payments/" .. id .. "/capture", {["Content-Type"] = "application/json"}, "{}")
end
