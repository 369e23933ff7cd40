-- Write an active job's progress and append its `progress` event; skip a job no longer active.
-- KEYS: job hash, job stream, owner stream, bytes counter
-- ARGV: loaded, total, speed, files json ('' = single), event data, job maxlen, owner maxlen,
--       bytes delta
-- Returns the event id, or false when the job is not active.
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return false end
redis.call('HSET', KEYS[1], 'loaded', ARGV[1], 'total', ARGV[2], 'speed', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'files', ARGV[4]) end
if tonumber(ARGV[8]) > 0 then redis.call('INCRBY', KEYS[4], ARGV[8]) end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'event', 'progress', 'data', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], id, 'event', 'progress', 'data', ARGV[5])
return id
