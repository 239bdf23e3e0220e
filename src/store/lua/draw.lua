-- The pre-queue draw, once, by the ticking node after the opening: the
-- ranks of tickets 1..P (P fixed by the opening tick) computed by the
-- node from the event's secret seed. Tickets seen in the last two windows
-- are carried into the rank-ordered liveness window.
-- KEYS: opened, drawn, rank, order, live (current window), live
--       (previous), pqlive (current window), pqfront, frontier, pqwait
-- ARGV: P, ranks (4 bytes big-endian per ticket), order (4 bytes per
--       rank), window key ttl (ms)
-- Returns 1 when drawn now, 0 when it was already done or P differs.
if redis.call('GET', KEYS[2]) then return 0 end
local p = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '-1') ~= p then return 0 end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3])
for n = 1, p do
  if redis.call('GETBIT', KEYS[5], n) == 1 or redis.call('GETBIT', KEYS[6], n) == 1 then
    local r = struct.unpack('>I4', ARGV[2], 4 * (n - 1) + 1)
    redis.call('SETBIT', KEYS[7], r, 1)
  end
end
redis.call('PEXPIRE', KEYS[7], ARGV[4])
redis.call('BITOP', 'OR', KEYS[10], KEYS[7])
redis.call('SET', KEYS[8], 0)
redis.call('SET', KEYS[9], p)
redis.call('SET', KEYS[2], 1)
return 1
