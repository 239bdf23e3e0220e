-- Issues the next ticket number, marked live in the current window.
-- KEYS: issued, live (current window)   ARGV: window key ttl (ms)
local n = redis.call('INCR', KEYS[1])
redis.call('SETBIT', KEYS[2], n, 1)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return n
