-- Jobs waiting for a worker: every owner's waiting zset, and the legacy single queue.
-- KEYS: owner rotation zset, legacy queue zset.  ARGV: owner-waiting key prefix and suffix
local depth = redis.call('ZCARD', KEYS[2])
for _, owner in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  depth = depth + redis.call('ZCARD', ARGV[1] .. owner .. ARGV[2])
end
return depth
