"""Cross-border matching: the partner's exit events against our entry events of the same vehicle.

A vehicle leaving the partner's country (their exit camera, delivered to our receiver's inbox) should
appear at our entry camera within `window_minutes`. `Matcher` is the pure logic (state and time
passed in, so tests drive it with a fake clock); `MatcherWorker` feeds it from Redis and writes
matches and alerts to their streams.

Plates match when equal after normalisation, or (with `confusable`) when they differ in exactly one
position whose two characters OCR confuses (O/0, B/8...). Two alerts:

- `exited_not_entered`: a partner exit with no entry of ours within the window, raised once the
  window plus `report_lag_s` (time for our entry event to arrive) has passed;
- `entered_without_exit`: our entry with no partner exit before it, raised once `report_lag_s` (time
  for the partner's message to reach us, outages included) has passed.

A late event still matches after its alert was raised: the match then settles the alert.
Restarts are safe: the worker replays `retention_hours` of both streams, and every output has a
deterministic id written at most once (marker key and XADD in one script).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis
from pydantic import ValidationError

from anpr.config import AnprConfig, MatchingConfig
from anpr.exchange.envelope import Envelope
from anpr.keys import Keys
from anpr.plates import confusable_key, normalise, similar
from anpr.schema import CrossingAlert, CrossingMatch, Direction, PlateEvent

log = logging.getLogger(__name__)

# Write an output once: a replay after restart finds the marker and adds nothing.
_EMIT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def plate_similarity(a: str, b: str, confusable: bool) -> Literal["exact", "confusable"] | None:
    """`exact`, `confusable` (one confusable substitution, anpr.plates) or None (different vehicles)."""
    if normalise(a) == normalise(b):
        return "exact"
    return "confusable" if confusable and similar(a, b, max_confusable=1) else None


@dataclass(slots=True)
class _Pass:
    event: PlateEvent
    plate: str
    matched: bool = False
    alerted: bool = False

    @property
    def at(self) -> datetime:
        return self.event.first_seen


class Matcher:
    """Pairs exits with entries; explicit state, no I/O, no clock of its own."""

    def __init__(self, cfg: MatchingConfig) -> None:
        self._cfg = cfg
        self._window = timedelta(minutes=cfg.window_minutes)
        self._tolerance = timedelta(seconds=cfg.clock_tolerance_s)
        self._lag = timedelta(seconds=cfg.report_lag_s)
        self._retention = timedelta(hours=cfg.retention_hours)
        self.reset()

    def reset(self) -> None:
        # Passes indexed by folded plate: every candidate for a match shares the key.
        self._exits: dict[str, list[_Pass]] = {}
        self._entries: dict[str, list[_Pass]] = {}
        self._seen: set[str] = set()

    def add_exit(self, event: PlateEvent) -> CrossingMatch | None:
        """A partner exit: match it with an unmatched entry of ours, or wait for one."""
        if event.event_id in self._seen:
            return None
        x = self._remember(self._exits, event)
        best = self._best(x, self._entries.get(confusable_key(x.plate), []), lambda e: e.at - x.at)
        return self._pair(x, best) if best else None

    def add_entry(self, event: PlateEvent) -> CrossingMatch | None:
        """Our entry: match it with an unmatched partner exit, or wait for one."""
        if event.event_id in self._seen:
            return None
        e = self._remember(self._entries, event)
        best = self._best(e, self._exits.get(confusable_key(e.plate), []), lambda x: e.at - x.at)
        return self._pair(best, e) if best else None

    def due_alerts(self, now: datetime) -> list[CrossingAlert]:
        """Alerts whose waiting time has passed by `now`; each raised once. Also forgets old passes."""
        alerts: list[CrossingAlert] = []
        for x in self._iter(self._exits):
            if not (x.matched or x.alerted) and x.at + self._window + self._lag <= now:
                x.alerted = True
                alerts.append(
                    self._alert("exited_not_entered", x, now, f"no entry within {self._cfg.window_minutes:g} min")
                )
        for e in self._iter(self._entries):
            if not (e.matched or e.alerted) and e.at + self._tolerance + self._lag <= now:
                e.alerted = True
                alerts.append(self._alert("entered_without_exit", e, now, "no partner exit record"))
        self._forget_before(now - self._retention)
        return alerts

    def _remember(self, index: dict[str, list[_Pass]], event: PlateEvent) -> _Pass:
        p = _Pass(event, normalise(event.plate))
        index.setdefault(confusable_key(p.plate), []).append(p)
        self._seen.add(event.event_id)
        return p

    def _best(self, new: _Pass, candidates: list[_Pass], transit: Callable[[_Pass], timedelta]) -> _Pass | None:
        """The unmatched candidate in the time window: exact plate first, then the closest in time."""
        ranked: list[tuple[bool, timedelta, _Pass]] = []
        for c in candidates:
            if c.matched or not (-self._tolerance <= transit(c) <= self._window):
                continue
            similarity = plate_similarity(new.plate, c.plate, self._cfg.confusable)
            if similarity is not None:
                ranked.append((similarity != "exact", abs(transit(c)), c))
        if not ranked:
            return None
        return min(ranked, key=lambda t: (t[0], t[1]))[2]

    def _pair(self, x: _Pass, e: _Pass) -> CrossingMatch:
        x.matched = e.matched = True
        ids = f"{x.event.event_id}|{e.event.event_id}"
        return CrossingMatch(
            match_id="match-" + hashlib.sha256(ids.encode()).hexdigest()[:24],
            exact=x.plate == e.plate,
            exit_event_id=x.event.event_id,
            entry_event_id=e.event.event_id,
            exit_plate=x.plate,
            entry_plate=e.plate,
            exit_site=x.event.site,
            entry_site=e.event.site,
            exited_at=x.at,
            entered_at=e.at,
            transit_s=(e.at - x.at).total_seconds(),
        )

    @staticmethod
    def _alert(
        kind: Literal["exited_not_entered", "entered_without_exit"], p: _Pass, now: datetime, detail: str
    ) -> CrossingAlert:
        return CrossingAlert(
            alert_id=f"{kind}:{p.event.event_id}",
            kind=kind,
            event_id=p.event.event_id,
            plate=p.plate,
            site=p.event.site,
            seen_at=p.at,
            raised_at=now,
            detail=detail,
        )

    @staticmethod
    def _iter(index: dict[str, list[_Pass]]) -> list[_Pass]:
        return [p for passes in index.values() for p in passes]

    def _forget_before(self, cutoff: datetime) -> None:
        for index in (self._exits, self._entries):
            for key in list(index):
                keep = [p for p in index[key] if p.at >= cutoff]
                for p in index[key]:
                    if p.at < cutoff:
                        self._seen.discard(p.event.event_id)
                if keep:
                    index[key] = keep
                else:
                    del index[key]


class MatcherWorker:
    """Feeds the Matcher from the inbox (partner exits) and our events stream (our entries)."""

    _COUNT = 500

    def __init__(
        self,
        cfg: AnprConfig,
        r: redis.Redis,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        self._cfg = cfg.matching
        self._r = r
        self._keys = Keys(cfg.redis.prefix)
        self._clock = clock
        self._stop = stop or threading.Event()
        self._emit = r.register_script(_EMIT)
        self.matcher = Matcher(cfg.matching)

    def run(self, burst: bool = False) -> None:
        """Replay `retention_hours` of both streams, then follow them; burst: stop when caught up.

        After a Redis error the state is rebuilt by replaying again: an output that failed to be
        written is then produced once more, and the ones that were written are not repeated.
        """
        while not self._stop.is_set():
            try:
                self._follow(burst)
                return
            except redis.RedisError as exc:
                log.warning("redis error (%r); replaying in 1 s", exc)
                self.matcher.reset()
                self._stop.wait(1.0)

    def _follow(self, burst: bool) -> None:
        start = f"{int((self._clock() - self._cfg.retention_hours * 3600) * 1000)}-0"
        cursors: dict[Any, Any] = {self._keys.exchange_inbox: start, self._keys.events: start}
        while not self._stop.is_set():
            resp: Any = self._r.xread(cursors, count=self._COUNT, block=None if burst else self._cfg.block_ms)
            caught_up = True
            for stream, entries in resp or []:
                name = stream.decode()
                for entry_id, fields in entries:
                    self._feed(name, fields)
                    cursors[name] = entry_id.decode()
                caught_up = caught_up and len(entries) < self._COUNT
            # Alerts only once both streams are read up to now: mid-replay, the other stream may
            # still hold the event that settles them.
            if caught_up:
                for alert in self.matcher.due_alerts(datetime.fromtimestamp(self._clock(), UTC)):
                    self._write(alert.alert_id, self._keys.crossing_alerts, "alert", alert.model_dump_json())
            if burst and not resp:
                return

    def _feed(self, stream: str, fields: dict[bytes, bytes]) -> None:
        try:
            if stream == self._keys.exchange_inbox:
                event = Envelope.model_validate_json(fields.get(b"payload", b"")).event
                match = self.matcher.add_exit(event) if event.direction == Direction.EXIT else None
            else:
                event = PlateEvent.model_validate_json(fields.get(b"event", b""))
                match = self.matcher.add_entry(event) if event.direction == Direction.ENTRY else None
        except ValidationError as exc:
            # The receiver and the publisher already refuse malformed messages; nothing to match here.
            log.warning("skipping unreadable entry on %s: %s", stream, exc.errors()[0]["msg"])
            return
        if match is not None:
            self._write(match.match_id, self._keys.crossing_matches, "match", match.model_dump_json())

    def _write(self, output_id: str, stream: str, field: str, data: str) -> None:
        ttl = int(self._cfg.retention_hours * 3600 * 2)
        self._emit(keys=[self._keys.crossing_emitted(output_id), stream], args=[ttl, field, data])
