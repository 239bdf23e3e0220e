-- The pre-queue draw, once, by the ticking node after the opening: the
-- ranks of tickets 1..P (P fixed by the opening tick) computed by the
-- node from the event's secret seed. Only the two strings are written
-- here (a copy, fast whatever P); the ticks then carry the tickets seen
-- in the last two windows into the rank-ordered liveness window, a chunk
-- at a time, so Redis never stalls for a long pre-queue.
-- KEYS: opened, drawn, rank, order, carried
-- ARGV: P, ranks (4 bytes big-endian per ticket), order (4 bytes per rank)
-- Returns 1 when drawn now, 0 when it was already done or P differs.
if redis.call('GET', KEYS[2]) or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if tonumber(redis.call('GET', KEYS[1]) or '-1') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SET', KEYS[5], 0)
return 1
