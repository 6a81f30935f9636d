
local p, me = ARGV[1], ARGV[2]
for _, key in ipairs(redis.call('SMEMBERS', p .. ':nk:' .. me)) do
  local set = p .. ':' .. key .. ':n:' .. me
  local where = p .. ':' .. key .. ':where'
  for _, sid in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('HGET', where, sid) == me then redis.call('HDEL', where, sid) end
    redis.call('PUBLISH', p .. ':all',
      cjson.encode({type = 'closed', k = key, sid = sid, o = me}))
  end
  redis.call('DEL', set)
end
redis.call('DEL', p .. ':nk:' .. me)
redis.call('DEL', p .. ':alive:' .. me)
redis.call('SREM', p .. ':nodes', me)
return 0
