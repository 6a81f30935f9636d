
local p, me = ARGV[1], ARGV[2]
redis.call('SET', p .. ':alive:' .. me, '1', 'PX', ARGV[3])
local joined = redis.call('SADD', p .. ':nodes', me)
local live = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. ':nodes')) do
  if redis.call('EXISTS', p .. ':alive:' .. node) == 1 then
    table.insert(live, node)
  else
    for _, key in ipairs(redis.call('SMEMBERS', p .. ':nk:' .. node)) do
      local set = p .. ':' .. key .. ':n:' .. node
      local where = p .. ':' .. key .. ':where'
      for _, sid in ipairs(redis.call('SMEMBERS', set)) do
        if redis.call('HGET', where, sid) == node then
          redis.call('HDEL', where, sid)
        end
      end
      redis.call('DEL', set)
    end
    redis.call('DEL', p .. ':nk:' .. node)
    redis.call('SREM', p .. ':nodes', node)
  end
end
local counts = {}
for i = 4, #ARGV do
  local n = 0
  for _, node in ipairs(live) do
    if node ~= me then
      n = n + redis.call('SCARD', p .. ':' .. ARGV[i] .. ':n:' .. node)
    end
  end
  table.insert(counts, n)
end
return {live, counts, joined}
