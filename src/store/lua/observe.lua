-- A poll from ticket ARGV[1]: marks it live and says where it stands.
-- KEYS: issued, frontier, granted, taken, live (current window), wait,
--       opened, drawn, rank, pqfront, pqlive (current window), pqwait
-- ARGV: number, window key ttl (ms), pre-queue (1: the event has one),
--       lottery (1: mode random)
-- Returns {kind, position}: 0 unknown, 1 waiting, 2 granted, 3 taken,
-- 4 forfeited, 5 in the pre-queue (before the opening and its draw), 6 in
-- the lottery (waiting, no position).
local n = tonumber(ARGV[1])
local issued = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < 1 or n > issued then return {0, 0} end
local g = redis.call('GETBIT', KEYS[3], n)
local t = redis.call('GETBIT', KEYS[4], n)
if g == 1 and t == 0 then return {2, 0} end
if g == 1 then return {3, 0} end
if t == 1 then return {4, 0} end
redis.call('SETBIT', KEYS[5], n, 1)
redis.call('PEXPIRE', KEYS[5], ARGV[2])
local opened = redis.call('GET', KEYS[7])
if ARGV[3] == '1' and (not opened or not redis.call('GET', KEYS[8])) then
  return {5, 0}
end
if ARGV[4] == '1' then
  -- the lottery: liveness by number is all it needs
  return {6, 0}
end
-- pre-queue tickets wait in rank order, ahead of everyone after them
local p = tonumber(opened or '0')
local pqfront = 0
if p > 0 then pqfront = tonumber(redis.call('GET', KEYS[10]) or '0') end
local ahead = 0
if n <= p then
  local r = struct.unpack('>I4', redis.call('GETRANGE', KEYS[9], 4 * (n - 1), 4 * n - 1))
  if r <= pqfront then return {4, 0} end
  redis.call('SETBIT', KEYS[11], r, 1)
  redis.call('PEXPIRE', KEYS[11], ARGV[2])
  if r - 1 >= pqfront + 1 then
    ahead = redis.call('BITCOUNT', KEYS[12], pqfront + 1, r - 1, 'BIT')
  end
  return {1, ahead}
end
if pqfront < p then
  ahead = redis.call('BITCOUNT', KEYS[12], pqfront + 1, p, 'BIT')
end
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= f then return {4, 0} end
if n - 1 >= f + 1 then
  ahead = ahead + redis.call('BITCOUNT', KEYS[6], f + 1, n - 1, 'BIT')
end
return {1, ahead}
