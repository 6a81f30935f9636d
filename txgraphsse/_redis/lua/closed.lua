
local p, me, key, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local where = p .. ':' .. key .. ':where'
if redis.call('HGET', where, sid) == me then redis.call('HDEL', where, sid) end
redis.call('SREM', p .. ':' .. key .. ':n:' .. me, sid)
redis.call('PUBLISH', p .. ':all', ARGV[5])
return 0
