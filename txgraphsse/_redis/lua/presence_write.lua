
local me, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
for i = 5, 4 + n do redis.call('HDEL', KEYS[2], ARGV[i]) end
for i = 5 + n, #ARGV - 1, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], me)
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
redis.call('ZADD', KEYS[1], now + ttl, me)
if redis.call('PTTL', KEYS[1]) < 2 * ttl then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
return 1
