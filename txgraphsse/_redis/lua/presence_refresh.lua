
local me, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local here = redis.call('PEXPIRE', KEYS[2], 2 * ttl)
if here == 1 then
  redis.call('ZADD', KEYS[1], now + ttl, me)
  if redis.call('PTTL', KEYS[1]) < 2 * ttl then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
end
local lost = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  if node ~= me then
    local hash = ARGV[3] .. node .. ARGV[4]
    for _, entry in ipairs(redis.call('HVALS', hash)) do table.insert(lost, entry) end
    redis.call('DEL', hash)
    redis.call('ZREM', KEYS[1], node)
  end
end
return {here, lost}
