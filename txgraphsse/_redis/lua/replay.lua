
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local after = tonumber(ARGV[2])
local reset = 0
if (not epoch) or epoch ~= ARGV[1] or after < 0 or after > seq then
  reset = 1
  after = 0
end
local start = '-'
if after > 0 then start = '(' .. ARGV[2] .. '-0' end
local upto = tonumber(ARGV[3])
local out = {reset, epoch or ''}
for i = 4, #KEYS do
  table.insert(out, redis.call('HGET', KEYS[3], ARGV[i]) or '')
  if upto > after then
    table.insert(out, redis.call('XRANGE', KEYS[i], start, ARGV[3] .. '-0'))
  else
    table.insert(out, {})
  end
end
return out
