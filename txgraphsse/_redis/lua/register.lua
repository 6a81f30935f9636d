
local p, me, key = ARGV[1], ARGV[2], ARGV[3]
local set = p .. ':' .. key .. ':n:' .. me
local where = p .. ':' .. key .. ':where'
local now = {}
for i = 4, #ARGV do now[ARGV[i]] = true end
for _, sid in ipairs(redis.call('SMEMBERS', set)) do
  if not now[sid] then
    redis.call('SREM', set, sid)
    if redis.call('HGET', where, sid) == me then redis.call('HDEL', where, sid) end
    redis.call('PUBLISH', p .. ':all',
      cjson.encode({type = 'closed', k = key, sid = sid, o = me}))
  end
end
for i = 4, #ARGV do
  redis.call('HSET', where, ARGV[i], me)
  redis.call('SADD', set, ARGV[i])
end
redis.call('SADD', p .. ':nk:' .. me, key)
return 0
