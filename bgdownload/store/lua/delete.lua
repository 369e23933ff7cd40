-- Delete a job: its hash, stream and control key, its entries in the owner index and the
-- waiting sets (an owner left in the rotation with no jobs is dropped by the next claim);
-- a job not yet at rest leaves the state counters. Run again (a retry after its
-- reply was lost) it finds no hash and counts nothing twice.
-- KEYS: job hash, job stream, control key, owner index, owner's waiting zset, stats hash,
--       legacy queue zset, then the file-name reservations the job holds
-- ARGV: job id, the terminal states...
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
for i = 8, #KEYS do redis.call('DEL', KEYS[i]) end
if not state then return 0 end
for i = 2, #ARGV do
  if ARGV[i] == state then return 1 end
end
redis.call('HINCRBY', KEYS[6], state, -1)
return 1
