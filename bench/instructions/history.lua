-- wrk script for bench/instructions/run: GETs a page of 50 before a random message of the room
-- given after `--` (its id, then the highest message id), as the suite's history step does.
local room = nil
local maxid = 0
function init(args) room = args[1]; maxid = tonumber(args[2]); math.randomseed(42) end
request = function()
  local before = math.random(100, maxid)
  return wrk.format("GET", "/api/v1/chat/" .. room .. "/?limit=50&before=" .. before, {["Authorization"] = "Token " .. os.getenv("TOKEN")})
end
