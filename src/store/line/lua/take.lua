-- The visitor takes its pass: once, if granted and not expired. The pass
-- joins the active set in the same step.
-- KEYS: granted, taken, pending, active
-- ARGV: number, pass id, session end (ms)
local n = tonumber(ARGV[1])
if redis.call('GETBIT', KEYS[1], n) ~= 1 or redis.call('GETBIT', KEYS[2], n) ~= 0 then
  return 0
end
redis.call('SETBIT', KEYS[2], n, 1)
local p = tonumber(redis.call('DECR', KEYS[3]))
if p < 0 then redis.call('SET', KEYS[3], 0) end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return 1
