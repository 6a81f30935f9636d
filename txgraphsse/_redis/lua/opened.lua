
local p, me, key, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('HSET', p .. ':' .. key .. ':where', sid, me)
redis.call('SADD', p .. ':' .. key .. ':n:' .. me, sid)
redis.call('SADD', p .. ':nk:' .. me, key)
return 0
