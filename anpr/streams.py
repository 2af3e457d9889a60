"""At-least-once work on a Redis stream: the one consumer-group loop every consumer of anpr runs.

The partner publisher, the archive, the hits matcher and the notifiers differ only in what they do
with a batch of entries (`GroupConsumer.handle`). The rules that keep nothing lost live here once:

- an entry is XACKed only after its work is done (`ack`), so a crash anywhere before that leaves it
  pending, and a restart under the same consumer name first does its own pending entries again;
- entries left pending by a consumer that died for good are taken over with XAUTOCLAIM once idle
  longer than `claim_idle_s`;
- work that fails for a reason that may pass (network, a database or broker away: `TransientError`)
  is retried in place with exponential backoff and jitter (`retry`), for as long as it takes: the
  lag grows, nothing is dropped, and the entry's delivery count does not grow;
- work that can never succeed (`PermanentError`, a malformed entry) and a *poison* entry (handed out
  `max_deliveries` times: its consumer keeps dying on it) go to the group's dead-letter stream with
  the reason, atomically with their XACK, so one bad entry never blocks the ones behind it.

Counters (done, retried, dead_lettered) live in a Redis hash and survive restarts; `done` is
incremented by XACK's own count inside one script, so it counts each entry exactly once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis

from anpr.config import ConfigError, ConsumerConfig, RedisConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# XACK and count in one step: a retried or repeated call counts nothing twice.
_ACK = """
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], n) end
return n
"""

# Dead-letter only what this call acknowledges: a repeat finds it acknowledged and adds nothing.
_DEAD = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[3], '*', 'source_stream', KEYS[1], 'source_id', ARGV[2], 'reason', ARGV[3],
             'fields', ARGV[4], 'consumer', ARGV[5], 'dead_at', ARGV[6])
  redis.call('HINCRBY', KEYS[2], 'dead_lettered', 1)
  return 1
end
return 0
"""


# Connection failures in a row after which a burst run gives up (its caller reports Redis unreachable).
_BURST_REDIS_ATTEMPTS = 3


class TransientError(Exception):
    """The work failed but may succeed later; `retry_after` is the other side's wish in seconds, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(Exception):
    """The other side refused the work; doing it again unchanged cannot succeed."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as read: `deliveries` is Redis's count of how often it was handed out."""

    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1

    def text(self) -> dict[str, str]:
        """The fields as text, for a dead letter."""
        return {text(k): text(v) for k, v in self.fields.items()}


@dataclass(slots=True)
class Counters:
    """This process's counts; the Redis hash holds the totals across restarts."""

    done: int = 0
    retried: int = 0
    dead_lettered: int = 0
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis names one consumer uses: what it reads, where its counters, health and dead letters go."""

    stream: str
    stats: str
    health: str
    dead: str


class GroupConsumer:
    """The consumer-group loop; a subclass says what a batch means in `handle`.

    `run(burst=True)` drains the stream and returns (tests, catch-up jobs). `done_counter` names the
    counter that `ack` increments ("delivered" for the publisher, "stored" for the archive...).
    """

    done_counter = "done"

    def __init__(
        self, r: redis.Redis, cfg: ConsumerConfig, keys: StreamKeys, stop: threading.Event | None = None
    ) -> None:
        self._base = cfg
        self._r = r
        self._names = keys
        self._stream = keys.stream
        self._stop = stop or threading.Event()
        self._ack = r.register_script(_ACK)
        self._dead = r.register_script(_DEAD)
        self.counters = Counters()
        self._next_health = 0.0
        self._next_claim = 0.0

    def handle(self, entries: list[Entry]) -> None:
        """Do the work of a batch; `ack` or `dead_letter` each entry once its fate is sealed.

        An entry left unacknowledged stays pending and is handed out again after a restart. Raise
        `TransientError` only around work that may be repeated: `retry` is usually the better tool.
        """
        raise NotImplementedError

    def health_extra(self) -> dict[str, Any]:
        """More fields for the health key (a subclass's own counters)."""
        return {}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- main loop -----------------------------------------------------------------------------

    def run(self, burst: bool = False) -> None:
        """Work until stopped; in burst mode, until nothing is left to read or claim.

        A Redis failure restarts the cycle from the own-pending step: whatever was read but not
        acknowledged when Redis went away is handled again.
        """
        failures = 0
        while not self._stop.is_set():
            try:
                self._ensure_group()
                self._drain_own_pending()
                while not self._stop.is_set():
                    self._maybe_report_health()
                    claimed = self._claim_stale(force=burst)
                    read = self._read_new(block=not burst)
                    failures = 0
                    if burst and claimed == 0 and read == 0:
                        self._report_health()
                        return
            except (redis.RedisError, TransientError) as exc:
                failures += 1
                if burst and isinstance(exc, redis.ConnectionError) and failures >= _BURST_REDIS_ATTEMPTS:
                    # A catch-up run answers; a service (not burst) waits for Redis as long as it takes.
                    raise
                delay = self.backoff(failures)
                log.warning("%s: %r; starting over in %.1f s", self._base.group, exc, delay)
                self._stop.wait(delay)

    def _ensure_group(self) -> None:
        try:
            # From the start of the stream: entries written before the first run are handled too.
            self._r.xgroup_create(self._stream, self._base.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _drain_own_pending(self) -> None:
        """Handle again what this consumer read before a crash or restart (its own PEL)."""
        after = "0-0"
        while not self._stop.is_set():
            resp = self._r.xreadgroup(
                self._base.group, self._base.consumer, {self._stream: after}, count=self._base.batch_size
            )
            raw = stream_entries(resp)
            if not raw:
                return
            entries = self._with_delivery_counts(raw)
            log.info("%s: handling %d own pending entries again", self._base.group, len(entries))
            self._process(entries)
            after = entries[-1].id

    def _claim_stale(self, force: bool) -> int:
        """Take over entries idle longer than claim_idle_s (their consumer is dead or stuck)."""
        now = time.monotonic()
        if not force and now < self._next_claim:
            return 0
        self._next_claim = now + min(self._base.claim_idle_s / 2, 30.0)
        cursor, total = "0-0", 0
        while not self._stop.is_set():
            resp: Any = self._r.xautoclaim(
                self._stream,
                self._base.group,
                self._base.consumer,
                int(self._base.claim_idle_s * 1000),
                start_id=cursor,
                count=self._base.batch_size,
            )
            # Redis 7 drops trimmed entries from the PEL itself (third element); 6.2 returns them as nil.
            raw = [(text(i), f) for i, f in resp[1] if i is not None]
            if raw:
                log.info("%s: claimed %d entries idle over %g s", self._base.group, len(raw), self._base.claim_idle_s)
                entries = self._with_delivery_counts(raw)
                self._process(entries)
                total += len(entries)
            cursor = text(resp[0])
            if cursor == "0-0":
                return total
        return total

    def _read_new(self, block: bool) -> int:
        resp = self._r.xreadgroup(
            self._base.group,
            self._base.consumer,
            {self._stream: ">"},
            count=self._base.batch_size,
            block=self._base.block_ms if block else None,
        )
        raw = stream_entries(resp)
        if raw:
            self._process([Entry(i, f) for i, f in raw])
        return len(raw)

    def _with_delivery_counts(self, raw: list[tuple[str, dict[bytes, bytes]]]) -> list[Entry]:
        pending: list[dict[str, Any]] = self._r.xpending_range(
            self._stream, self._base.group, raw[0][0], raw[-1][0], len(raw), self._base.consumer
        )
        counts = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [Entry(i, f, counts.get(i, 1)) for i, f in raw]

    def _process(self, entries: list[Entry]) -> None:
        fine: list[Entry] = []
        for e in entries:
            if e.deliveries > self._base.max_deliveries:
                self.dead_letter(e.id, f"poison: read {e.deliveries} times without being {self.done_counter}", e.text())
            else:
                fine.append(e)
        if fine:
            self.handle(fine)

    # -- tools for handle() ----------------------------------------------------------------------

    def ack(self, ids: list[str]) -> int:
        """Acknowledge entries whose work is done and count them once."""
        if not ids:
            return 0
        n = int(self._ack(keys=[self._stream, self._names.stats], args=[self._base.group, self.done_counter, *ids]))
        self.counters.done += n
        return n

    def dead_letter(self, entry_id: str, reason: str, fields: dict[str, Any]) -> None:
        """Move an entry to the dead-letter stream with why, and the original fields for a re-drive."""
        n = self._dead(
            keys=[self._stream, self._names.stats, self._names.dead],
            args=[
                self._base.group,
                entry_id,
                reason,
                json.dumps(fields, ensure_ascii=False),
                self._base.consumer,
                datetime.now(UTC).isoformat(),
            ],
        )
        self.counters.dead_lettered += int(n)
        log.error("%s: dead-lettered %s: %s", self._base.group, entry_id, reason)

    def retry(self, work: Callable[[], T], count: int = 1) -> T | None:
        """Run `work` until it succeeds (its result), or we are stopped (None).

        `TransientError` waits (Retry-After honoured, capped) and tries again; `PermanentError` and
        anything else propagate to the caller. `count` is how many entries one failure delays.
        """
        attempt = 0
        while not self._stop.is_set():
            try:
                return work()
            except TransientError as exc:
                attempt += 1
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self._base.max_retry_after_s)
                else:
                    delay = self.backoff(attempt)
                self.counters.retried += count
                with contextlib.suppress(redis.RedisError):  # a counter must not turn a passing fault into a restart
                    self._r.hincrby(self._names.stats, "retried", count)
                log.warning("%s: %d failed (%s); retry %d in %.2f s", self._base.group, count, exc, attempt, delay)
                self._maybe_report_health()
                self._stop.wait(delay)
        return None

    def backoff(self, attempt: int) -> float:
        """Exponential with "equal jitter": never below half the step, so retries never hammer."""
        step = min(self._base.backoff_max_s, self._base.backoff_base_s * 2 ** min(attempt - 1, 30))
        return step / 2 + random.uniform(0, step / 2)

    # -- health --------------------------------------------------------------------------------

    def _maybe_report_health(self) -> None:
        if time.monotonic() >= self._next_health:
            self._report_health()

    def _report_health(self) -> None:
        self._next_health = time.monotonic() + self._base.health_interval_s
        try:
            status = {
                "consumer": self._base.consumer,
                "group": self._base.group,
                "stream": self._stream,
                "updated_at": time.time(),
                "process": {
                    self.done_counter: self.counters.done,
                    "retried": self.counters.retried,
                    "dead_lettered": self.counters.dead_lettered,
                    "started_at": self.counters.started_at,
                    **self.health_extra(),
                },
                **group_lag(self._r, self._stream, self._base.group),
            }
            ttl = max(10, int(self._base.health_interval_s * 3))
            self._r.set(self._names.health, json.dumps(status), ex=ttl)
        except redis.RedisError as exc:
            # Health is best effort: failing to report must not stop the work (the key then expires).
            log.debug("health report failed: %r", exc)


def check_block(cfg: ConsumerConfig, section: str, redis_cfg: RedisConfig) -> None:
    """A blocking read longer than the socket timeout would look like a dead Redis."""
    if cfg.block_ms / 1000 >= redis_cfg.socket_timeout_s:
        raise ConfigError(f"{section}.block_ms must be shorter than redis.socket_timeout_s")


def group_lag(r: redis.Redis, stream: str, group: str) -> dict[str, int | None]:
    """`lag`: entries the group has not read yet (None when Redis cannot tell); `pending`: read, not acked."""
    for g in r.xinfo_groups(stream):
        if text(g["name"]) == group:
            lag = g.get("lag")
            return {"lag": None if lag is None else int(lag), "pending": int(g["pending"])}
    return {"lag": None, "pending": 0}


def stream_entries(resp: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of the one stream in an XREAD(GROUP) reply (a deleted entry has empty fields)."""
    if not resp:
        return []
    return [(text(i), f or {}) for i, f in resp[0][1]]


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
