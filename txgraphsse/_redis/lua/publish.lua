
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local size = tonumber(ARGV[2])
local seq = 0
local id = ''
if size > 0 then
  seq = redis.call('INCR', KEYS[1])
  id = epoch .. '.' .. seq
  local kept = redis.call('XLEN', KEYS[3])
  if kept >= size then
    local gone = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', kept - size + 1)
    redis.call('HSET', KEYS[5], ARGV[3], gone[#gone][1])
  end
  if ARGV[8] == '' then
    redis.call('XADD', KEYS[3], 'MAXLEN', size, seq .. '-0',
      't', ARGV[4], 'e', ARGV[5], 'd', ARGV[6], 'o', ARGV[7])
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', size, seq .. '-0',
      't', ARGV[4], 'e', ARGV[5], 'd', ARGV[6], 'o', ARGV[7], 'b', '1')
  end
  redis.call('SADD', KEYS[6], ARGV[3])
end
redis.call('PUBLISH', KEYS[4], '{"s":' .. seq .. ',"i":"' .. id .. '",' .. ARGV[9])
return {seq, epoch}
