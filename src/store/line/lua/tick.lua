-- One admission tick, called by every node every tick. Every node renews
-- its heartbeat in the node set and reads the shared figures; the node
-- holding the lease also advances the line.
-- KEYS: lease, issued, frontier, granted, taken, live, live_prev, wait,
--       grants, pending, active, nodes, admitted, waiting, ticked, careful,
--       gate, opened, drawn, pqfront, pqlive, pqlive_prev, pqwait, order,
--       undecided, rank, carried, gap
-- ARGV: node, lease ttl (ms), now (ms), claim window (ms), max active,
--       rate per minute (0: grant nothing), heartbeat ttl (ms), ticket
--       grace (ms), burst, pre-queue (1: the event has one), open (1: its
--       opening time has come), lottery (1: mode random), random seed,
--       tickets carried into rank order per tick after the draw, hand-off
--       window (ms; 0: pending grants hold a slot for the whole claim
--       window), hard cap on active plus all pending (0: none), live
--       window (ms: a node that beat within it counts as live; 0: the
--       heartbeat ttl), this node's heartbeat stamp (ms: now corrected by
--       its measured skew from Redis's clock, so every stamp is on one clock),
--       the highest ticket number and frontier this node has seen (the
--       floors a line that went back is repaired to)
-- Returns {holder, granted, skipped, active, pending, nodes, admitted,
-- waiting, draw, drawing, live, issued, frontier, repaired}: holder 1 on the ticking node, 0 on the others
-- (which grant nothing and see the figures of the last tick); draw P > 0
-- when the holder must now draw the ranks of the P pre-queue tickets
-- (draw.lua); drawing 1 from the opening time until the draw is done
-- (nobody is admitted meanwhile, on any node); live: the nodes that beat within
-- the live window (the N of the local share: a node that died just before
-- an outage is not one of them).
local now = tonumber(ARGV[3])
local stamp = tonumber(ARGV[18])
redis.call('ZADD', KEYS[12], stamp, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', stamp - tonumber(ARGV[7]))
local nodes = redis.call('ZCARD', KEYS[12])
local live = nodes
if tonumber(ARGV[17]) > 0 then
  live = redis.call('ZCOUNT', KEYS[12], stamp - tonumber(ARGV[17]), '+inf')
end
-- The line went back below what this node saw (a failover to a replica
-- that missed the last writes, a restore): numbering resumes above every
-- number handed out; the gap is kept for a grace (KEYS[28]: "frontier
-- then, frontier seen, issued then, issued seen, until") so polls count
-- positions from the frontier seen (nobody's jumps back) and the places
-- issued after the replica's copy as live until their owners poll again
-- (their liveness was lost with it); the frontier walks the places it
-- lost again, granting the live ones through the gate.
local repaired = 0
local ci = tonumber(redis.call('GET', KEYS[2]) or '0')
local cf = tonumber(redis.call('GET', KEYS[3]) or '0')
local fi, ff = tonumber(ARGV[19] or '0'), tonumber(ARGV[20] or '0')
if fi > ci or ff > cf then
  if fi > ci then redis.call('SET', KEYS[2], fi) end
  local g = {cf, math.max(ff, cf), ci, math.max(fi, ci), now + tonumber(ARGV[8])}
  redis.call('SET', KEYS[28], table.concat(g, ' '), 'PX', 2 * tonumber(ARGV[8]))
  repaired = math.max(fi - ci, 0) + math.max(ff - cf, 0)
end
local function figures()
  return tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0')
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local i, f = figures()
  return {0, 0, 0,
    redis.call('ZCOUNT', KEYS[11], '(' .. now, '+inf'),
    tonumber(redis.call('GET', KEYS[10]) or '0'),
    nodes,
    tonumber(redis.call('GET', KEYS[13]) or '0'),
    tonumber(redis.call('GET', KEYS[14]) or '0'),
    0,
    -- drawing from the opening time on, before the holder's next tick has
    -- marked it: newcomers are not let in (issue.lua) until the draw is done
    ((redis.call('GET', KEYS[18]) or (ARGV[10] == '1' and ARGV[11] == '1'))
      and not redis.call('GET', KEYS[19])) and 1 or 0,
    live, i, f, repaired}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
-- After a gap in ticking longer than half a grace (Redis unreachable or
-- every node down), visitors could not mark themselves live: for one
-- grace the frontier stops at the first place not seen again instead of
-- skipping it, so everyone gets a grace to poll once more.
local grace = tonumber(ARGV[8])
local last = tonumber(redis.call('GET', KEYS[15]) or '0')
local careful_until = tonumber(redis.call('GET', KEYS[16]) or '0')
if last > 0 and now - last > grace / 2 then
  careful_until = now + grace
  redis.call('SET', KEYS[16], careful_until)
end
redis.call('SET', KEYS[15], now)
local careful = now < careful_until
-- after a repair the places issued after the replica's copy (their
-- liveness lost) are waited for a grace; the lost frontier's places are
-- walked normally
local careful_from = 0
local gap = redis.call('GET', KEYS[28])
if gap then
  local g = {}
  for x in string.gmatch(gap, '%d+') do g[#g + 1] = tonumber(x) end
  if now < g[5] and g[4] > g[3] then
    if not careful then careful_from = g[3] end
    careful = true
  end
end
-- the pre-queue: at the opening the tickets issued so far (P) are fixed
-- for the draw; nothing is granted until it is done
local pq = ARGV[10] == '1'
local opened = redis.call('GET', KEYS[18])
if pq and not opened and ARGV[11] == '1' then
  opened = redis.call('GET', KEYS[2]) or '0'
  redis.call('SET', KEYS[18], opened)
  redis.call('SET', KEYS[20], 0)
  if opened == '0' then redis.call('SET', KEYS[19], 1) end
end
local p = tonumber(opened or '0')
local frozen = pq and not redis.call('GET', KEYS[19])
local draw = 0
if frozen and opened then
  if redis.call('EXISTS', KEYS[26]) == 0 then
    draw = p
  else
    -- carry the next chunk of live pre-queue tickets into rank order
    local from = tonumber(redis.call('GET', KEYS[27]) or '0') + 1
    local to = math.min(p, from + tonumber(ARGV[14]) - 1)
    if to >= from then
      local ranks = redis.call('GETRANGE', KEYS[26], 4 * (from - 1), 4 * to - 1)
      for n = from, to do
        if redis.call('GETBIT', KEYS[6], n) == 1 or redis.call('GETBIT', KEYS[7], n) == 1 then
          redis.call('SETBIT', KEYS[21], struct.unpack('>I4', ranks, 4 * (n - from) + 1), 1)
        end
      end
      redis.call('PEXPIRE', KEYS[21], 3 * tonumber(ARGV[8]))
    end
    redis.call('SET', KEYS[27], to)
    if to >= p then
      redis.call('SET', KEYS[20], 0)
      redis.call('SET', KEYS[3], p)
      redis.call('SET', KEYS[19], 1)
      frozen = false
    end
  end
end
local claim = tonumber(ARGV[4])
local pending = tonumber(redis.call('GET', KEYS[10]) or '0')
-- grants not taken within the claim window expire (oldest first); not
-- while careful: their owners could not take them during the gap either
while not careful do
  local head = redis.call('LINDEX', KEYS[9], 0)
  if not head then break end
  local sep = string.find(head, ':', 1, true)
  local at = tonumber(string.sub(head, 1, sep - 1))
  local r = tonumber(string.sub(head, sep + 1))
  if now - at < claim then break end
  redis.call('LPOP', KEYS[9])
  if redis.call('GETBIT', KEYS[4], r) == 1 and redis.call('GETBIT', KEYS[5], r) == 0 then
    redis.call('SETBIT', KEYS[4], r, 0)
    redis.call('SETBIT', KEYS[5], r, 1)
    pending = pending - 1
  end
end
if pending < 0 then pending = 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', now)
local active = redis.call('ZCARD', KEYS[11])
redis.call('BITOP', 'OR', KEYS[8], KEYS[6], KEYS[7])
-- grants older than the hand-off window (ARGV[15], ms; 0: the claim
-- window) no longer hold a slot: count the fresh ones still untaken, from
-- the newest back (the list is in grant order)
local holding = pending
local handoff = tonumber(ARGV[15] or '0')
if handoff > 0 then
  local fresh, from, done = 0, -256, false
  while not done do
    local chunk = redis.call('LRANGE', KEYS[9], from, from + 255)
    if #chunk == 0 then break end
    for i = #chunk, 1, -1 do
      local e = chunk[i]
      local sep = string.find(e, ':', 1, true)
      if now - tonumber(string.sub(e, 1, sep - 1)) >= handoff then
        done = true
        break
      end
      local r = tonumber(string.sub(e, sep + 1))
      if redis.call('GETBIT', KEYS[4], r) == 1 and redis.call('GETBIT', KEYS[5], r) == 0 then
        fresh = fresh + 1
      end
    end
    if #chunk < 256 then break end
    from = from - 256
  end
  holding = math.min(pending, fresh)
end
local free = tonumber(ARGV[5]) - active - holding
-- a hard cap (ARGV[16], 0: none) counts every pending grant
local cap = tonumber(ARGV[16] or '0')
if cap > 0 then free = math.min(free, cap - active - pending) end
-- the shared gate (GCRA, theoretical arrival time in KEYS[17]): at most
-- `burst` at once, then one per 60000 / rate ms; newcomers admitted
-- directly by issue.lua draw from the same gate
local rate = tonumber(ARGV[6])
local t, tat, budget = 0, 0, 0
if rate > 0 and not frozen then
  t = 60000 / rate
  tat = tonumber(redis.call('GET', KEYS[17]) or '0')
  if tat < now then tat = now end
  -- whole admissions owed to the gate (rounded up, float noise aside)
  local owed = math.ceil((tat - now) / t - 1e-6)
  budget = math.min(free, tonumber(ARGV[9]) - owed)
end
local f = tonumber(redis.call('GET', KEYS[3]) or '0')
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
local granted, skipped = 0, 0
local pqfront = tonumber(redis.call('GET', KEYS[20]) or '0')
local lottery = ARGV[12] == '1'
local waiting = 0
if lottery and not frozen then
  -- the lottery: uniform draws among live tickets not yet decided
  -- (granted, taken or expired), the pre-queue included; the frontier
  -- does not move and nobody is skipped
  redis.call('BITOP', 'OR', KEYS[25], KEYS[4], KEYS[5])
  redis.call('SETBIT', KEYS[25], issued + 1, 0)
  redis.call('BITOP', 'NOT', KEYS[25], KEYS[25])
  redis.call('BITOP', 'AND', KEYS[25], KEYS[25], KEYS[8])
  math.randomseed(tonumber(ARGV[13]))
  while granted < budget and issued > 0 do
    local pick = -1
    -- rejection sampling is uniform; after 32 misses (few live among
    -- many numbers) the next live after a random point, slightly biased
    for _ = 1, 32 do
      local c = math.random(1, issued)
      if redis.call('GETBIT', KEYS[25], c) == 1 then
        pick = c
        break
      end
    end
    if pick < 0 then
      local o = math.random(1, issued)
      pick = redis.call('BITPOS', KEYS[25], 1, o, issued, 'BIT')
      if pick < 0 then pick = redis.call('BITPOS', KEYS[25], 1, 1, o, 'BIT') end
      if pick < 0 then break end
    end
    redis.call('SETBIT', KEYS[25], pick, 0)
    redis.call('SETBIT', KEYS[4], pick, 1)
    redis.call('RPUSH', KEYS[9], now .. ':' .. pick)
    granted = granted + 1
  end
  waiting = redis.call('BITCOUNT', KEYS[25], 1, issued, 'BIT')
  budget = 0
end
-- pre-queue tickets first, in drawn rank order
if not frozen and pqfront < p then
  redis.call('BITOP', 'OR', KEYS[23], KEYS[21], KEYS[22])
  while granted < budget and pqfront < p do
    local r = redis.call('BITPOS', KEYS[23], 1, pqfront + 1, p, 'BIT')
    if careful and r ~= pqfront + 1 then break end
    if r < 0 then
      skipped = skipped + (p - pqfront)
      pqfront = p
    else
      skipped = skipped + (r - pqfront - 1)
      local n = struct.unpack('>I4', redis.call('GETRANGE', KEYS[24], 4 * (r - 1), 4 * r - 1))
      -- (decided already: by a lottery before a switch to fifo)
      if redis.call('GETBIT', KEYS[4], n) == 0 and redis.call('GETBIT', KEYS[5], n) == 0 then
        redis.call('SETBIT', KEYS[4], n, 1)
        redis.call('RPUSH', KEYS[9], now .. ':' .. n)
        granted = granted + 1
      end
      pqfront = r
    end
  end
  redis.call('SET', KEYS[20], pqfront)
end
while granted < budget and pqfront >= p and f < issued do
  local p = redis.call('BITPOS', KEYS[8], 1, f + 1, issued, 'BIT')
  if careful and p ~= f + 1 and f + 1 > careful_from then break end
  if p < 0 then
    skipped = skipped + (issued - f)
    f = issued
  else
    skipped = skipped + (p - f - 1)
    if redis.call('GETBIT', KEYS[4], p) == 0 and redis.call('GETBIT', KEYS[5], p) == 0 then
      redis.call('SETBIT', KEYS[4], p, 1)
      redis.call('RPUSH', KEYS[9], now .. ':' .. p)
      granted = granted + 1
    end
    f = p
  end
end
redis.call('SET', KEYS[3], f)
if granted > 0 then
  redis.call('SET', KEYS[17], string.format('%.3f', tat + granted * t))
end
pending = pending + granted
redis.call('SET', KEYS[10], pending)
local admitted = redis.call('INCRBY', KEYS[13], granted)
-- live tickets still waiting: what the other nodes show newcomers
if lottery then
  -- counted above
elseif f < issued then
  waiting = redis.call('BITCOUNT', KEYS[8], f + 1, issued, 'BIT')
end
if not frozen and pqfront < p then
  waiting = waiting + redis.call('BITCOUNT', KEYS[23], pqfront + 1, p, 'BIT')
end
redis.call('SET', KEYS[14], waiting)
local ni, nf = figures()
return {1, granted, skipped, active, pending, nodes, admitted, waiting, draw,
  (opened and frozen) and 1 or 0, live, ni, nf, repaired}
