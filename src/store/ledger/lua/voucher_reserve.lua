-- A voucher claim: the identity's existing claim as is, else a unit taken
-- from the stock with the next sequence number (never reused), else sold out.
-- KEYS: claims (hash identity -> claim), counters (hash), pending (zset
--       identity -> reserved at, Redis ms)
-- ARGV: identity, stock
-- A claim is "p|SEQ|" (pending), "i|SEQ|CODE" (issued) or "r||REASON" (refused).
-- Returns {kind, seq, text, taken, issued, exhausted, version}: kind 0 sold
-- out, 1 pending, 2 issued (text = code), 3 refused (text = reason).
local function answer(kind, seq, text)
  local c = redis.call('HMGET', KEYS[2], 'taken', 'issued', 'exhausted', 'ver')
  return {kind, tonumber(seq) or 0, text,
          tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, tonumber(c[4]) or 0}
end
local c = redis.call('HGET', KEYS[1], ARGV[1])
if c then
  local kind, seq, text = string.match(c, '^(%a)|(%d*)|(.*)$')
  if kind == 'p' then return answer(1, seq, '') end
  if kind == 'i' then return answer(2, seq, text) end
  if kind == 'r' then return answer(3, 0, text) end
  return redis.error_reply('damaged voucher claim record')
end
local taken = tonumber(redis.call('HGET', KEYS[2], 'taken')) or 0
if redis.call('HGET', KEYS[2], 'exhausted') == '1' or taken >= tonumber(ARGV[2]) then
  return answer(0, 0, '')
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1) - 1
redis.call('HINCRBY', KEYS[2], 'taken', 1)
redis.call('HINCRBY', KEYS[2], 'ver', 1)
redis.call('HSET', KEYS[1], ARGV[1], 'p|' .. seq .. '|')
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return answer(1, seq, '')
