-- Put a job in its owner's waiting zset, and the owner in the rotation (at the back)
-- unless it is there already: the two change together or the job could not be reached.
-- KEYS: owner's waiting zset, owner rotation zset, turn counter.  ARGV: job id, score, owner
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[3])
end
return 1
