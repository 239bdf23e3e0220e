-- Records the code of a pending claim and appends its audit line, in one
-- step: the audit list is exactly the issued set.
-- KEYS: claims, counters, pending, codes (hash code -> identity), audit (list)
-- ARGV: identity, code, audit line before the sequence number, after it
-- Returns {status, taken, issued, exhausted, version}: status 0 recorded,
-- 1 already issued with this code, -1 not pending, -2 the identity holds
-- another code, -3 the code belongs to another identity.
local function answer(status)
  local c = redis.call('HMGET', KEYS[2], 'taken', 'issued', 'exhausted', 'ver')
  return {status, tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, tonumber(c[4]) or 0}
end
local c = redis.call('HGET', KEYS[1], ARGV[1])
if not c then return answer(-1) end
local kind, seq, text = string.match(c, '^(%a)|(%d*)|(.*)$')
if kind == 'i' then
  if text == ARGV[2] then return answer(1) end
  return answer(-2)
end
if kind ~= 'p' then return answer(-1) end
local owner = redis.call('HGET', KEYS[4], ARGV[2])
if owner and owner ~= ARGV[1] then return answer(-3) end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 'i|' .. seq .. '|' .. ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'issued', 1)
redis.call('HINCRBY', KEYS[2], 'ver', 1)
redis.call('RPUSH', KEYS[5], ARGV[3] .. seq .. ARGV[4])
return answer(0)
