-- A poll from ticket ARGV[1]: marks it live and says where it stands.
-- KEYS: issued, frontier, granted, taken, live (current window), wait
-- ARGV: number, window key ttl (ms)
-- Returns {kind, position}: 0 unknown, 1 waiting, 2 granted, 3 taken,
-- 4 forfeited.
local n = tonumber(ARGV[1])
local issued = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < 1 or n > issued then return {0, 0} end
local g = redis.call('GETBIT', KEYS[3], n)
local t = redis.call('GETBIT', KEYS[4], n)
if g == 1 and t == 0 then return {2, 0} end
if g == 1 then return {3, 0} end
if t == 1 then return {4, 0} end
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= f then return {4, 0} end
redis.call('SETBIT', KEYS[5], n, 1)
redis.call('PEXPIRE', KEYS[5], ARGV[2])
local pos = 0
if n - 1 >= f + 1 then
  pos = redis.call('BITCOUNT', KEYS[6], f + 1, n - 1, 'BIT')
end
return {1, pos}
