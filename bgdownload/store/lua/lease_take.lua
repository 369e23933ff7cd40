-- Take a lease that is free, or held by a worker judged dead (see keys.dead_worker).
-- A lease's value is "<worker id> <token>"; a bare token names no worker and is never broken.
-- KEYS: lease.  ARGV: value, ttl ms, dead-worker key prefix.  Returns 1 when taken.
local current = redis.call('GET', KEYS[1])
local holder = current and string.match(current, '^(%S+) ')
if current and not (holder and redis.call('EXISTS', ARGV[3] .. holder) == 1) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
