-- A newcomer. Into an empty line with room and the shared rate allowing,
-- admitted at once (the pass joins the active set); otherwise the next
-- ticket number, marked live in the current window.
-- KEYS: issued, live (current window), frontier, pending, active, gate,
--       admitted, opened, drawn, pqfront, waiting
-- ARGV: window key ttl (ms), now (ms), admit (1: may admit directly),
--       max active, rate per minute, burst, pass id, session end (ms),
--       pre-queue (1: the event has one: nobody enters before the draw's
--       tickets are all past), lottery (1: mode random: the frontier does
--       not move, "nobody waits" is the last tick's count), the highest
--       number this node has seen handed out
-- Returns {0, 0, 0} admitted, or {1, number, repaired}: repaired > 0 when
-- the counter had gone back below that number (a failover lost the last
-- writes) and was raised first, so no number is handed twice.
local now = tonumber(ARGV[2])
local repaired = 0
local seen = tonumber(ARGV[11] or '0')
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if seen > cur then
  redis.call('SET', KEYS[1], seen)
  repaired = seen - cur
end
local open = true
if ARGV[9] == '1' then
  local p = redis.call('GET', KEYS[8])
  open = p and redis.call('GET', KEYS[9])
    and (ARGV[10] == '1' or tonumber(redis.call('GET', KEYS[10]) or '0') >= tonumber(p))
end
if ARGV[3] == '1' and open then
  local issued = tonumber(redis.call('GET', KEYS[1]) or '0')
  local f = tonumber(redis.call('GET', KEYS[3]) or '0')
  local nobody = f >= issued
  if ARGV[10] == '1' then
    nobody = tonumber(redis.call('GET', KEYS[11]) or '0') == 0
  end
  if nobody then
    local used = redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf')
      + tonumber(redis.call('GET', KEYS[4]) or '0')
    local rate = tonumber(ARGV[5])
    if used < tonumber(ARGV[4]) and rate > 0 then
      -- the shared gate (GCRA): the same one the tick grants from
      local t = 60000 / rate
      local tat = tonumber(redis.call('GET', KEYS[6]) or '0')
      if tat < now then tat = now end
      -- whole admissions owed to the gate (rounded up, float noise aside)
      local owed = math.ceil((tat - now) / t - 1e-6)
      if owed + 1 <= tonumber(ARGV[6]) then
        redis.call('SET', KEYS[6], string.format('%.3f', tat + t))
        redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
        redis.call('INCRBY', KEYS[7], 1)
        return {0, 0, 0}
      end
    end
  end
end
local n = redis.call('INCR', KEYS[1])
redis.call('SETBIT', KEYS[2], n, 1)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {1, n, repaired}
