"""Who is dead: judging workers by their heartbeats, and the broker's ownership-checked scripts.

The broker (:mod:`.delivery`) runs these scripts and feeds :class:`Liveness`;
nothing here talks to Redis itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: how often a worker writes its heartbeat (its score in ``keys.WORKERS`` changes each time)
HEARTBEAT_PERIOD = 2.0
#: a worker whose heartbeat did not change for this long, watched without a break, is dead
DEAD_AFTER = 10.0
#: how often a worker looks at the consumer group for messages held by dead workers
WATCH_PERIOD = 2.0
#: how long the "judged dead" mark lets others break the dead worker's leases; its own
#: leases expire sooner (``LEASE_TTL``), and a heartbeat from it clears the mark
DEAD_MARK_TTL = 300

#: Judge a consumer dead and move up to ``count`` of its messages to me, in one step so
#: two watchers never split or double one takeover. Entries deleted from the stream
#: leave the pending list on XCLAIM; a drained consumer leaves the group.
#: KEYS: stream, dead mark.  ARGV: group, dead consumer, me, count, mark ttl s.
#: Returns {{id, {field, value, ...}}, ...}.
TAKE_OVER = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
local taken = {}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[4], ARGV[2])
for _, entry in ipairs(pending) do
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, entry[1])
  local message = claimed[1]
  if type(message) == 'table' and type(message[2]) == 'table' then
    taken[#taken + 1] = message
  end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return taken
"""

#: Reset the idle time of the messages that are still mine (one another worker took
#: over stays with it).  KEYS: stream.  ARGV: group, me, ids...
KEEP_MINE = """
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return 0
"""

#: Acknowledge and delete a message unless another worker holds it now (it took the
#: message over and acknowledges it itself).  KEYS: stream.  ARGV: group, me, id.
ACK_MINE = """
local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)[1]
if entry and entry[2] ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""


class Liveness:
    """Which workers stopped beating, judged from this process's own uninterrupted watch.

    A worker is dead when its heartbeat score stayed the same for ``dead_after``
    seconds while this process watched without a break — not when the score is
    merely old: after a Redis outage every score is old until each worker beats
    again, and clocks of other machines need not agree with ours. A gap in the
    watch (a Redis error, a stalled loop) starts the judgement over.
    """

    def __init__(self, dead_after: float = DEAD_AFTER, max_gap: float = DEAD_AFTER / 2) -> None:
        self.dead_after = dead_after
        self.max_gap = max_gap
        #: worker id → (the heartbeat score last seen, when it was first seen, monotonic)
        self._seen: dict[str, tuple[float | None, float]] = {}
        self._last: float | None = None

    def forget(self) -> None:
        """The watch was interrupted: judge nobody until watched long enough again."""
        self._seen.clear()
        self._last = None

    def observe(
        self, now: float, beats: Mapping[str, float], holders: Iterable[str]
    ) -> list[str]:
        """Record one look at the heartbeats; the ``holders`` (of messages) now judged dead."""
        if self._last is not None and now - self._last > self.max_gap:
            self.forget()
        self._last = now
        holding = set(holders)
        dead = []
        for name in sorted(holding):
            score = beats.get(name)
            seen = self._seen.get(name)
            if seen is None or seen[0] != score:
                self._seen[name] = (score, now)
            elif now - seen[1] >= self.dead_after:
                dead.append(name)
        for name in set(self._seen) - holding:
            del self._seen[name]
        return dead
