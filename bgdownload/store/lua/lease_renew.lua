-- Extend a lease while it is ours; take it again when it expired and nobody took it since,
-- while the job is still active or between retries (Redis was away for longer than the
-- lease: the holder still runs the job, and a worker taking it over takes the lease first).
-- KEYS: lease, job hash.  ARGV: lease value, ttl ms
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local state = redis.call('HGET', KEYS[2], 'state')
if not holder and (state == 'active' or state == 'waiting') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
