
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  for _, entry in ipairs(redis.call('HVALS', ARGV[1] .. node .. ARGV[2])) do
    table.insert(found, entry)
  end
end
return found
