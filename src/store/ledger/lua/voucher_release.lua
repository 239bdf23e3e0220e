-- Gives a pending claim's unit back to the stock: the issuer refused the
-- identity (kept, with its reason) or ran out (the event is sold out).
-- KEYS: claims, counters, pending
-- ARGV: identity, "refuse" or "sold_out", reason
-- Returns {status, taken, issued, exhausted, version}: status 0 released,
-- 1 already done by another node, -1 not pending.
local function answer(status)
  local c = redis.call('HMGET', KEYS[2], 'taken', 'issued', 'exhausted', 'ver')
  return {status, tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, tonumber(c[4]) or 0}
end
local c = redis.call('HGET', KEYS[1], ARGV[1])
local kind = c and string.match(c, '^(%a)|')
if kind ~= 'p' then
  if ARGV[2] == 'refuse' and kind == 'r' then return answer(1) end
  if ARGV[2] == 'sold_out' and not c and redis.call('HGET', KEYS[2], 'exhausted') == '1' then
    return answer(1)
  end
  return answer(-1)
end
if ARGV[2] == 'refuse' then
  redis.call('HSET', KEYS[1], ARGV[1], 'r||' .. ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], 'exhausted', 1)
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'taken', -1)
redis.call('HINCRBY', KEYS[2], 'ver', 1)
return answer(0)
