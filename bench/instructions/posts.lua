-- wrk script for bench/instructions/run: POSTs a message to one of the rooms given after `--`
-- in turn, each with its own numbers in its text, as the suite's durable posts do.
local counter = 0
local rooms = {}
-- A tag of this run, so the warm-up's client_ids are not the counted run's.
math.randomseed(os.time())
local tag = tostring(os.time()) .. "-" .. tostring(math.random(1000000000))
function init(args)
  for i, r in ipairs(args) do rooms[i] = r end
end
request = function()
  counter = counter + 1
  local room = rooms[(counter % #rooms) + 1]
  local body = string.format('{"content":"bench %d %d %d lorem ipsum dolor sit amet, consectetur adipiscing elit"', counter % 64, counter, 1000000000 + counter * 37)
  -- CLIENT_IDS=1: each post with a client_id of its own, as the suite's durable posts send.
  if os.getenv("CLIENT_IDS") == "1" then
    body = body .. string.format(',"client_id":"%s-%d"', tag, counter)
  end
  body = body .. "}"
  return wrk.format("POST", "/api/v1/chat/" .. room .. "/", {["Authorization"] = "Token " .. os.getenv("TOKEN"), ["Content-Type"] = "application/json"}, body)
end
