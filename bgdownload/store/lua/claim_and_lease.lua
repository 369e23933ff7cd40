-- The job a queue message runs (the one it picked before, else the best waiting one),
-- then take that job's lease and read the job and its pending control.
-- The job's keys follow from its id, unknown before the pop: built from the prefixes.
-- The lease is taken when free or when its holder was judged dead (as lease_take.lua).
-- KEYS: run key, queue zset.  ARGV: run ttl s, lease value, lease ttl ms,
--       job key prefix, lease key prefix, control key prefix, dead-worker key prefix
-- Returns false when nothing is waiting, else {job id, lease taken 1/0, control or '',
-- the job hash as a flat list}.
local picked = redis.call('GET', KEYS[1])
if not picked then
  local best = redis.call('ZPOPMIN', KEYS[2])
  if #best == 0 then return false end
  picked = best[1]
  redis.call('SET', KEYS[1], picked, 'EX', ARGV[1])
end
-- the lease is ours too when it holds our value already (this claim ran before, its
-- reply was lost, and it is retried), or when its holder is a worker marked dead
local lease = ARGV[5] .. picked
local current = redis.call('GET', lease)
local holder = current and string.match(current, '^(%S+) ')
local taken = 0
if not current or current == ARGV[2]
    or (holder and redis.call('EXISTS', ARGV[7] .. holder) == 1) then
  redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
  taken = 1
end
local control = redis.call('GET', ARGV[6] .. picked) or ''
return {picked, taken, control, redis.call('HGETALL', ARGV[4] .. picked)}
