-- wrk script for bench/instructions/run: POSTs a message to one of the rooms given after `--`
-- in turn, each with its own numbers in its text, as the suite's durable posts do.
local counter = 0
local rooms = {}
function init(args)
  for i, r in ipairs(args) do rooms[i] = r end
end
request = function()
  counter = counter + 1
  local room = rooms[(counter % #rooms) + 1]
  local body = string.format('{"content":"bench %d %d %d lorem ipsum dolor sit amet, consectetur adipiscing elit"}', counter % 64, counter, 1000000000 + counter * 37)
  return wrk.format("POST", "/api/v1/chat/" .. room .. "/", {["Authorization"] = "Token " .. os.getenv("TOKEN"), ["Content-Type"] = "application/json"}, body)
end
