-- Reserve a file name for a job, or for one file of a batch job, and record it with the job.
-- A name is held by one job at a time; a holder whose job is gone no longer holds it.
-- The name the same slot held before (a promotion that had to move) is given up.
-- KEYS: name key of the new path, job hash.
-- ARGV: holder ('<job id>' or '<job id>:<index>'), job key prefix, name key prefix,
--       field that records the name ('path' or 'file_name:<index>'), its new JSON value,
--       then more field/value pairs to set with it.
-- Returns 1 reserved, 0 held by another live job, -1 the job is gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  local holder = string.match(held, '^[^:]+')
  if redis.call('EXISTS', ARGV[2] .. holder) == 1 then return 0 end
end
local before = redis.call('HGET', KEYS[2], ARGV[4])
if before then
  local ok, value = pcall(cjson.decode, before)
  if ok and type(value) == 'table' then value = value[2] end
  if ok and type(value) == 'string' then
    local old = ARGV[3] .. value
    if old ~= KEYS[1] and redis.call('GET', old) == ARGV[1] then redis.call('DEL', old) end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
return 1
