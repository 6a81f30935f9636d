
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('PUBLISH', KEYS[4],
  '{"m":"' .. ARGV[4] .. '","y":' .. ARGV[5] .. ',"s":' .. seq .. '}')
local out = {epoch, seq, 0}
local after = ARGV[3]
if epoch ~= ARGV[2] and ARGV[2] ~= '' and tonumber(after) >= 0 then
  -- A new epoch: the store lost what this node knew; all of it is new.
  after = '0'
end
local from = tonumber(after)
if from >= 0 and from < seq then
  local evicted = redis.call('HVALS', KEYS[5])
  for _, id in ipairs(evicted) do
    local trimmed = tonumber(string.match(id, '^(%d+)'))
    if trimmed and trimmed > out[3] then out[3] = trimmed end
  end
  for _, channel in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local stream = ARGV[6] .. channel
    local entries = redis.call('XRANGE', stream, '(' .. after .. '-0', '+')
    if #entries > 0 then
      table.insert(out, channel)
      table.insert(out, entries)
    end
  end
end
return out
