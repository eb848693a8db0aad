-- POST /v1/payments/<id>/capture of holds made before the run, each captured once: the file IDS holds
-- their ids one per line, and wrk's two threads take them in turns (thread 1 the odd lines, thread 2
-- the even ones). Arguments: IDS (a file path), RUN.
dofile("bench/lua/report.lua")
local counter, ids = 0, {}
function init(args)
  for line in io.lines(args[1]) do
    table.insert(ids, line)
  end
end
function request()
  counter = counter + 1
  -- Out of holds: id 0 is not found, so the run shows it as an error.
  local id = ids[(tid - 1) + 2 * (counter - 1) + 1] or "0"
  return wrk.format("POST", "/v1/payments/" .. id .. "/capture", {["Content-Type"] = "application/json"}, "{}")
end
