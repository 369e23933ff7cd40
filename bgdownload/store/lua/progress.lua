-- Write an active job's progress and append its `progress` event; skip a job no longer active.
-- KEYS: job hash, job stream, owner stream, bytes counter
-- ARGV: loaded, total, speed, files json ('' = single), event data, job maxlen, owner maxlen,
--       bytes delta, operation id
-- Returns the event id, or false when the job is not active. The same operation run
-- again (a retry after its reply was lost) returns the first run's id and counts nothing twice.
local state, done = unpack(redis.call('HMGET', KEYS[1], 'state', 'op:progress'))
if done then
  local op, done_id = string.match(done, '^(%S+) (%S+)$')
  if op == ARGV[9] then return done_id end
end
if state ~= 'active' then return false end
redis.call('HSET', KEYS[1], 'loaded', ARGV[1], 'total', ARGV[2], 'speed', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'files', ARGV[4]) end
if tonumber(ARGV[8]) > 0 then redis.call('INCRBY', KEYS[4], ARGV[8]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'event', 'progress', 'data', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], id, 'event', 'progress', 'data', ARGV[5])
redis.call('HSET', KEYS[1], 'op:progress', ARGV[9] .. ' ' .. id)
return id
