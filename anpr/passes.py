"""The lane registry: links a trailer's plate to its tractor's event across the cameras of a lane.

A truck shows its front plate to the camera it approaches and, behind a semitrailer, only the
trailer's rear plate to the camera it drives away from: one camera never sees both. A lane's cameras
may run in different worker processes, so their passes meet in Redis, per lane:

- every emitted pass whose side is known (anpr/track.py, from the plate's motion) is recorded;
- a rear plate `plates.similar` to a recent front plate moving the same way is that vehicle's own
  rear plate (a car): it marks that front pass as seen from behind and links nothing;
- any other rear plate is a trailer's: it claims the most recent front pass moving the same way,
  last seen at most `tracker.trailer_link_s` before the rear plate was first seen, neither seen
  from behind nor claimed by another trailer, and carries that event's id as `linked_event_id`.

Deciding and claiming are one Lua script, so two workers cannot claim one tractor. The plate
comparison stays in Python (one similarity rule, anpr/plates.py): the candidates are read first and
the ids of the matching ones passed to the script. Times are the events' own (epoch ms), so a replay
links as a live lane would.

Limits: a pass is decided once, when it is emitted. A rear plate emitted before its own car's front
plate (whose track was still undecided) is taken for a trailer; an early-emitted front plate's
`last_seen` is when it was decided, so a truck that then waits at the booth can outlast the window.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import redis
from redis.exceptions import RedisError

from anpr.config import AnprConfig, TrackerConfig
from anpr.keys import Keys
from anpr.plates import similar
from anpr.redis_client import connect
from anpr.schema import PlateEvent, Side

log = logging.getLogger(__name__)

# The script takes well under a millisecond; waiting longer for a link only holds the event back.
TIMEOUT_S = 0.5
# Wall-clock lifetime of a lane's keys after its last pass, on top of the window. Only a safety net for
# a lane that went quiet or was renamed (trimming by event time keeps a busy lane small); generous
# because a replay can run slower than real time while its event times keep the real pace.
TTL_GRACE_S = 600

# KEYS: passes (sorted set: event id -> last seen ms), records (hash: event id -> JSON).
# ARGV: event id, plate, direction, side, first seen ms, last seen ms, window ms, trim before ms,
#       TTL ms, then (rear plates only) the ids of front passes showing this very plate, latest first.
# Returns the event id this pass links to, or nil.
_DECIDE = """
local id, direction, side = ARGV[1], ARGV[3], ARGV[4]
local known = redis.call('HGET', KEYS[2], id)
if known then return cjson.decode(known).linked end  -- a retried call: same answer, no second claim
local first, last = tonumber(ARGV[5]), tonumber(ARGV[6])
local trim = '(' .. ARGV[8]
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', trim)) do redis.call('HDEL', KEYS[2], old) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', trim)
local record = {plate = ARGV[2], direction = direction, side = side, last_seen = last}
local function stored(pass)
  local raw = redis.call('HGET', KEYS[2], pass)
  return raw and cjson.decode(raw)
end
if side == 'rear' and #ARGV > 9 then
  -- this vehicle's own rear plate (a car): its front pass is no tractor
  for i = 10, #ARGV do
    local front = stored(ARGV[i])
    if front then
      front.behind = id
      redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(front))
      record.own = ARGV[i]
      break
    end
  end
elseif side == 'rear' then
  for _, pass in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], first, first - tonumber(ARGV[7]))) do
    local front = stored(pass)
    if front and front.side == 'front' and front.direction == direction and not front.behind
        and not front.claimed_by then
      front.claimed_by = id
      redis.call('HSET', KEYS[2], pass, cjson.encode(front))
      record.linked = pass
      break
    end
  end
end
redis.call('HSET', KEYS[2], id, cjson.encode(record))
redis.call('ZADD', KEYS[1], last, id)
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
return record.linked
"""


def _ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


@dataclass(slots=True)
class PassStats:
    """Counters for the stage's metrics; `unchecked` above zero means some links may be missing."""

    recorded: int = 0
    linked: int = 0  # trailers linked to their tractor
    own_rear: int = 0  # rear plates of a vehicle whose front plate was recorded (cars)
    unchecked: int = 0  # published without a registry decision: Redis failed, now or just before
    redis_errors: int = 0


class PassRegistry:
    """Records a lane's passes in Redis and links trailers; one instance may serve many lanes."""

    def __init__(self, client: redis.Redis, keys: Keys, cfg: TrackerConfig, retry_after_s: float) -> None:
        self.client = client
        self.keys = keys
        self.cfg = cfg
        self.retry_after_s = retry_after_s
        self.stats = PassStats()
        self._decide = client.register_script(_DECIDE)
        self._retry_at = 0.0  # time.monotonic() before which Redis is not tried again

    @classmethod
    def from_config(cls, cfg: AnprConfig) -> PassRegistry:
        """A registry on its own client: short timeouts and no retries, so a Redis outage delays an
        event by at most TIMEOUT_S (then not at all for `events.retry_after_s`)."""
        redis_cfg = cfg.redis.model_copy(
            update={
                "socket_timeout_s": min(cfg.redis.socket_timeout_s, TIMEOUT_S),
                "connect_timeout_s": min(cfg.redis.connect_timeout_s, TIMEOUT_S),
                "retries": 0,
            }
        )
        return cls(connect(redis_cfg), Keys(cfg.redis.prefix), cfg.tracker, cfg.events.retry_after_s)

    def link(self, event: PlateEvent, side: Side) -> PlateEvent:
        """Record the pass; a trailer's plate comes back with its tractor's event id in `linked_event_id`.

        Never raises for Redis trouble: the event then comes back unchanged (logged and counted), as
        does a pass of unknown side, which can be neither a tractor nor a trailer.
        """
        if side is Side.UNKNOWN:
            return event
        if time.monotonic() < self._retry_at:
            return self._unchecked(event, "Redis failed less than retry_after_s ago")
        try:
            tractor = self._record(event, side)
        except RedisError as exc:
            self.stats.redis_errors += 1
            self._retry_at = time.monotonic() + self.retry_after_s
            return self._unchecked(event, str(exc))
        self.stats.recorded += 1
        if tractor is None:
            return event
        self.stats.linked += 1
        log.info("trailer plate %s (%s) linked to %s", event.plate, event.event_id, tractor)
        return event.model_copy(update={"linked_event_id": tractor})

    def _record(self, event: PlateEvent, side: Side) -> str | None:
        """Run the script; the tractor's event id when this pass is its trailer."""
        passes = self.keys.lane_passes(event.site, event.lane)
        records = self.keys.lane_pass_records(event.site, event.lane)
        first, last = _ms(event.first_seen), _ms(event.last_seen)
        window_ms = round(self.cfg.trailer_link_s * 1000)
        own = self._own_fronts(records, event, first - window_ms) if side is Side.REAR else []
        if own:
            self.stats.own_rear += 1
        # Kept past the window for as long as an early emit may wait: a pass reaches the registry up to
        # that long after it was first seen, so a later one may still need what an earlier one would trim.
        late_s = max(self.cfg.max_delay_s, self.cfg.direction_wait_s)
        trim_before = first - window_ms - round(late_s * 1000)
        ttl_ms = round((self.cfg.trailer_link_s + late_s + TTL_GRACE_S) * 1000)
        args = [event.event_id, event.plate, event.direction.value, side.value, first, last, window_ms]
        tractor = self._decide(keys=[passes, records], args=[*args, trim_before, ttl_ms, *own])
        return tractor.decode() if tractor is not None else None

    def _own_fronts(self, records: str, rear: PlateEvent, since_ms: int) -> list[str]:
        """Recent front passes, moving the same way, whose plate is this rear plate: latest first.

        Not bounded by the rear plate's first sight: cameras close together can see both ends of
        one car at once.
        """
        fronts = []
        raw: dict[bytes, bytes] = self.client.hgetall(records)  # type: ignore[assignment]  # sync client
        for pass_id, data in raw.items():
            r = json.loads(data)
            if (
                r["side"] == Side.FRONT
                and r["direction"] == rear.direction
                and r["last_seen"] >= since_ms
                and similar(r["plate"], rear.plate)
            ):
                fronts.append((r["last_seen"], pass_id.decode()))
        return [pass_id for _, pass_id in sorted(fronts, reverse=True)]

    def _unchecked(self, event: PlateEvent, reason: str) -> PlateEvent:
        self.stats.unchecked += 1
        log.warning(
            "lane registry unavailable (%s): event %s published without a trailer check", reason, event.event_id
        )
        return event
