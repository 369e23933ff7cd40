-- The job a queue message runs (the one it picked before, else the next owner's best
-- waiting job), then take that job's lease and read the job and its pending control.
-- Owners are served round robin: the first owner of the rotation that is not at its cap
-- in this worker gives its best job and moves to the back (or leaves, with none left).
-- Jobs still in the single queue of an older version move to their owners' queues first.
-- The job's keys follow from its id, unknown before the pop: built from the prefixes.
-- The lease is taken when free or when its holder was judged dead (as lease_take.lua).
-- KEYS: run key, owner rotation zset, turn counter, legacy queue zset
-- ARGV: run ttl s, lease value, lease ttl ms, job key prefix, lease key prefix,
--       control key prefix, dead-worker key prefix, owner-waiting key prefix and suffix,
--       legacy jobs moved per claim, then the owners at their cap in this worker
-- Returns false when nothing is waiting, 'capped' when only capped owners have waiting
-- jobs, else {job id, lease taken 1/0, control or '', the job hash as a flat list}.
local function waiting(owner) return ARGV[8] .. owner .. ARGV[9] end

local function join(owner)
  if not redis.call('ZSCORE', KEYS[2], owner) then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), owner)
  end
end

local function migrate()
  local moved = redis.call('ZPOPMIN', KEYS[4], ARGV[10])
  for i = 1, #moved, 2 do
    local owner = redis.call('HGET', ARGV[4] .. moved[i], 'owner')
    if owner then
      redis.call('ZADD', waiting(owner), moved[i + 1], moved[i])
      join(owner)
    end
  end
end

-- the best job of the first owner in turn that is not capped; 'capped' or false if none
local function next_job()
  local capped = {}
  for i = 11, #ARGV do capped[ARGV[i]] = true end
  local blocked, stale, start = false, {}, 0
  local page = #ARGV - 10 + 8
  while true do
    local owners = redis.call('ZRANGE', KEYS[2], start, start + page - 1)
    for _, owner in ipairs(owners) do
      local queue = waiting(owner)
      if redis.call('EXISTS', queue) == 0 then
        stale[#stale + 1] = owner  -- its last job left the queue some other way
      elseif capped[owner] then
        blocked = true
      else
        local best = redis.call('ZPOPMIN', queue)[1]
        for _, gone in ipairs(stale) do redis.call('ZREM', KEYS[2], gone) end
        if redis.call('EXISTS', queue) == 1 then
          redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), owner)
        else
          redis.call('ZREM', KEYS[2], owner)
        end
        return best
      end
    end
    if #owners < page then break end
    start = start + page
  end
  for _, gone in ipairs(stale) do redis.call('ZREM', KEYS[2], gone) end
  return blocked and 'capped'
end

local picked = redis.call('GET', KEYS[1])
if not picked then
  migrate()
  picked = next_job()
  if not picked or picked == 'capped' then return picked end
  redis.call('SET', KEYS[1], picked, 'EX', ARGV[1])
end
-- the lease is ours too when it holds our value already (this claim ran before, its
-- reply was lost, and it is retried), or when its holder is a worker marked dead
local lease = ARGV[5] .. picked
local current = redis.call('GET', lease)
local holder = current and string.match(current, '^(%S+) ')
local taken = 0
if not current or current == ARGV[2]
    or (holder and redis.call('EXISTS', ARGV[7] .. holder) == 1) then
  redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
  taken = 1
end
local control = redis.call('GET', ARGV[6] .. picked) or ''
return {picked, taken, control, redis.call('HGETALL', ARGV[4] .. picked)}
