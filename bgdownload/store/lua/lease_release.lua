-- Drop a lease only while it is still ours, and with it the other keys given (the
-- queue message's run key): a worker that lost the job to another must not unhook
-- the message from the job the new holder runs.  KEYS: lease, others...  ARGV: lease value
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', unpack(KEYS)) end
return 0
