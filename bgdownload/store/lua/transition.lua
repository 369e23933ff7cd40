-- Move a job to a new state with its `state` event, unless its state changed meanwhile.
-- A job that joins its owner's waiting zset puts the owner in the rotation (at the back,
-- if not there yet); one that leaves it takes the owner out when it was the last.
-- KEYS: job hash, job stream, owner stream, owner's waiting zset, stats hash,
--       owner rotation zset, turn counter, legacy queue zset
-- ARGV: expected state, new state, event data, job maxlen, owner maxlen,
--       ttl seconds (0 = keep), queue score ('' = not queued), job id, operation id, owner,
--       field, value, ...
-- Returns {1, event id}, or {0, current state ('' = no such job)} when it is not the expected one.
-- The same operation run again (a retry after its reply was lost) changes nothing and
-- returns the first run's event id, so no event is ever appended twice.
local current, done = unpack(redis.call('HMGET', KEYS[1], 'state', 'op:state'))
if done then
  local op, done_id = string.match(done, '^(%S+) (%S+)$')
  if op == ARGV[9] then return {1, done_id} end
end
if current ~= ARGV[1] then return {0, current or ''} end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'state', 'data', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'event', 'state', 'data', ARGV[3])
redis.call('HSET', KEYS[1], 'op:state', ARGV[9] .. ' ' .. id)
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
  if not redis.call('ZSCORE', KEYS[6], ARGV[10]) then
    redis.call('ZADD', KEYS[6], redis.call('INCR', KEYS[7]), ARGV[10])
  end
else
  redis.call('ZREM', KEYS[8], ARGV[8])
  redis.call('ZREM', KEYS[4], ARGV[8])
  if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('ZREM', KEYS[6], ARGV[10]) end
end
redis.call('HINCRBY', KEYS[5], ARGV[1], -1)
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
return {1, id}
