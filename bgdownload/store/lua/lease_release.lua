-- Drop a lease only while it is still ours.  KEYS: lease.  ARGV: lease value
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
