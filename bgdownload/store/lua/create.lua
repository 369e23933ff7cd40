-- One round trip per create: idempotency, the owner's rate budget (GCRA), the job and
-- its first event, and the task queue message, so a job is never stored without its
-- message nor a message sent for a job that was not stored.
-- KEYS: job hash, job stream, owner stream, owner index, owner's waiting zset, stats hash,
--       idempotency key ('' = none), rate key ('' = no limit), task stream ('' = none),
--       owner rotation zset, turn counter
-- ARGV: job id, created ms, queue score, event data, job maxlen, owner maxlen,
--       idempotency ttl, now ms, rate interval ms, rate period ms, task message,
--       JSON array [field, value, ...] of the job hash (one argument, not 48: cheaper
--       for the client to pack), job key prefix (the remembered job's key follows
--       from its id, known only once the idempotency key is read), owner
-- Returns {1, event id} when created, {0, existing job id} for a known idempotency
-- key, {2, ms to wait} when the rate budget is spent. Job ids are fresh UUIDs, so a job
-- hash that exists already means this very creation ran before (a retry after its reply
-- was lost): it answers created again and stores, counts and queues nothing twice.
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, ''} end
if KEYS[7] ~= '' then
  local existing = redis.call('GET', KEYS[7])
  if existing and redis.call('EXISTS', ARGV[13] .. existing) == 1 then
    return {0, existing}
  end
end
if KEYS[8] ~= '' then
  -- KEYS[8] holds the theoretical arrival time (ms) of the owner's next creation
  local now = tonumber(ARGV[8])
  local tat = tonumber(redis.call('GET', KEYS[8]) or now)
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[9])
  if new_tat - now > tonumber(ARGV[10]) then
    return {2, tostring(new_tat - now - tonumber(ARGV[10]))}
  end
  redis.call('SET', KEYS[8], tostring(new_tat), 'PX', math.ceil(new_tat - now))
end
if KEYS[7] ~= '' then redis.call('SET', KEYS[7], ARGV[1], 'EX', ARGV[7]) end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[12])))
-- owner index score: creation time in ms * 1000, bumped past the newest entry so jobs
-- created in the same millisecond still list in creation order
local order = tonumber(ARGV[2]) * 1000
local newest = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= order then order = tonumber(newest[2]) + 1 end
redis.call('ZADD', KEYS[4], string.format('%.0f', order), ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
if not redis.call('ZSCORE', KEYS[10], ARGV[14]) then
  redis.call('ZADD', KEYS[10], redis.call('INCR', KEYS[11]), ARGV[14])
end
redis.call('HINCRBY', KEYS[6], 'waiting', 1)
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'event', 'state', 'data', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], id, 'event', 'state', 'data', ARGV[4])
if KEYS[9] ~= '' then redis.call('XADD', KEYS[9], '*', 'data', ARGV[11]) end
return {1, id}
