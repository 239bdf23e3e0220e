-- Pending claims reserved at least ARGV[1] ms ago (Redis clock), oldest
-- first, at most ARGV[2]: what a node finishes for a node that died.
-- KEYS: claims, pending
-- Returns {identity, seq, identity, seq, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]),
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local c = redis.call('HGET', KEYS[1], id)
  local kind, seq = string.match(c or '', '^(%a)|(%d*)|')
  if kind == 'p' then
    out[#out + 1] = id
    out[#out + 1] = seq
  end
end
return out
