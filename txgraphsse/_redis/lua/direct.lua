
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return false end
if redis.call('EXISTS', ARGV[2] .. ':alive:' .. owner) == 0 then return false end
return {owner, redis.call('PUBLISH', ARGV[2] .. ':node:' .. owner, ARGV[3])}
