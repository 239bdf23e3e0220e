-- A poll from ticket ARGV[1]: marks it live and says where it stands.
-- KEYS: issued, frontier, granted, taken, live (current window), wait,
--       opened, drawn, rank, pqfront, pqlive (current window), pqwait, gap
-- ARGV: number, window key ttl (ms), pre-queue (1: the event has one),
--       lottery (1: mode random), now (ms), the highest number and the
--       highest frontier this node has seen
-- Returns {kind, position, repaired}: 0 unknown, 1 waiting, 2 granted, 3
-- taken, 4 forfeited, 5 in the pre-queue (before the opening and its
-- draw), 6 in the lottery (waiting, no position); repaired 1 when this
-- poll raised a counter that went back (a failover lost the last writes).
local n = tonumber(ARGV[1])
local issued = tonumber(redis.call('GET', KEYS[1]) or '0')
local issued0 = issued
local repaired = 0
if n > issued and n <= tonumber(ARGV[6] or '0') then
  -- a number this node saw handed out, beyond the counter: the counter
  -- went back; it never hands this number again
  redis.call('SET', KEYS[1], n)
  issued = n
  repaired = 1
end
if n < 1 or n > issued then return {0, 0, 0} end
local g = redis.call('GETBIT', KEYS[3], n)
local t = redis.call('GETBIT', KEYS[4], n)
if g == 1 and t == 0 then return {2, 0, repaired} end
if g == 1 then return {3, 0, repaired} end
if t == 1 then return {4, 0, repaired} end
redis.call('SETBIT', KEYS[5], n, 1)
redis.call('PEXPIRE', KEYS[5], ARGV[2])
local opened = redis.call('GET', KEYS[7])
if ARGV[3] == '1' and (not opened or not redis.call('GET', KEYS[8])) then
  return {5, 0, repaired}
end
if ARGV[4] == '1' then
  -- the lottery: liveness by number is all it needs
  return {6, 0, repaired}
end
-- pre-queue tickets wait in rank order, ahead of everyone after them
local p = tonumber(opened or '0')
local pqfront = 0
if p > 0 then pqfront = tonumber(redis.call('GET', KEYS[10]) or '0') end
local ahead = 0
if n <= p then
  local r = struct.unpack('>I4', redis.call('GETRANGE', KEYS[9], 4 * (n - 1), 4 * n - 1))
  if r <= pqfront then return {4, 0, repaired} end
  redis.call('SETBIT', KEYS[11], r, 1)
  redis.call('PEXPIRE', KEYS[11], ARGV[2])
  if r - 1 >= pqfront + 1 then
    ahead = redis.call('BITCOUNT', KEYS[12], pqfront + 1, r - 1, 'BIT')
  end
  return {1, ahead, repaired}
end
if pqfront < p then
  ahead = redis.call('BITCOUNT', KEYS[12], pqfront + 1, p, 'BIT')
end
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= f then return {4, 0, repaired} end
-- after a repair (tick.lua), or before it when this node saw more than
-- Redis now has: count from the frontier seen before the failover (the
-- places it lost are being served again, ahead of everyone behind them),
-- and the places issued after the replica's copy as live until their
-- owners poll again
local from, unknown_lo, unknown_hi = f, 0, 0
local seen_f = tonumber(ARGV[7] or '0')
local lost_lo, lost_hi = issued0, tonumber(ARGV[6] or '0')
local gap = redis.call('GET', KEYS[13])
if gap then
  local g = {}
  for x in string.gmatch(gap, '%d+') do g[#g + 1] = tonumber(x) end
  if tonumber(ARGV[5]) < g[5] then
    seen_f = math.max(seen_f, g[2])
    lost_lo, lost_hi = g[3], g[4]
  end
end
if n > seen_f and seen_f > from then from = seen_f end
unknown_lo, unknown_hi = math.max(lost_lo, from) + 1, math.min(lost_hi, n - 1)
if n - 1 >= from + 1 then
  ahead = ahead + redis.call('BITCOUNT', KEYS[6], from + 1, n - 1, 'BIT')
end
if unknown_hi >= unknown_lo and unknown_lo > 0 then
  ahead = ahead + (unknown_hi - unknown_lo + 1)
    - redis.call('BITCOUNT', KEYS[6], unknown_lo, unknown_hi, 'BIT')
end
return {1, ahead, repaired}
