"""Deliver every plate event on our events stream to the partner customs service: signed, once, nothing lost.

A consumer group on the events stream gives at-least-once delivery; the receiver's idempotency by
message id (= event id) turns that into exactly-once storage. The rules that make it hold:

- an entry is XACKed only after the partner answered 2xx for it, so a crash anywhere before that
  leaves it pending, and a restart (same consumer name) re-delivers its own pending entries first;
- entries left pending by a consumer that died for good are taken over with XAUTOCLAIM once idle
  longer than `claim_idle_s`;
- network errors, timeouts, 5xx and 429 are retried in place with exponential backoff and jitter
  (Retry-After honoured), for as long as it takes: the lag grows, nothing is dropped;
- a message the partner refuses (other 4xx), a malformed entry, and a *poison* entry (read
  `max_deliveries` times: the publisher keeps dying on it) go to the dead-letter stream with the
  reason, atomically with their XACK, so one bad entry never blocks the ones behind it.

Counters (delivered, retried, dead_lettered) live in a Redis hash and survive restarts; `delivered`
is incremented by XACK's own count inside one script, so it counts each event exactly once.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from anpr.config import AnprConfig, ConfigError
from anpr.exchange.envelope import Envelope, Party, PlateImage, Signer
from anpr.exchange.transport import PermanentError, TransientError, Transport, make_transport
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import PlateEvent

log = logging.getLogger(__name__)

# A message is its payload (as a JSON string) plus the signature object and wrapper: under this many bytes.
_SIGNATURE_BYTES = 320

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


@dataclass(frozen=True, slots=True)
class _Entry:
    """One stream entry as read: `deliveries` is Redis's count of how often it was handed out."""

    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """An event serialised for the partner; signed at each attempt, so the signature is always fresh."""

    entry_id: str
    event: PlateEvent
    payload: str
    size: int


@dataclass(slots=True)
class Counters:
    """This process's counts; the Redis hash holds the totals across restarts."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    requests: int = 0
    started_at: float = field(default_factory=time.time)


class Publisher:
    """The consumer-group loop. `run(burst=True)` drains the stream and returns (tests, catch-up jobs)."""

    def __init__(
        self,
        cfg: AnprConfig,
        r: redis.Redis,
        transport: Transport,
        signer: Signer,
        stop: threading.Event | None = None,
    ) -> None:
        pc = cfg.publisher
        if pc.block_ms / 1000 >= cfg.redis.socket_timeout_s:
            raise ConfigError("publisher.block_ms must be shorter than redis.socket_timeout_s")
        self._cfg = pc
        self._r = r
        self._keys = Keys(cfg.redis.prefix)
        self._stream = self._keys.events
        self._transport = transport
        self._signer = signer
        self._stop = stop or threading.Event()
        self._ack = r.register_script(_ACK)
        self._dead = r.register_script(_DEAD)
        self._sender = Party(site=pc.sender_site, country=pc.sender_country)
        self.counters = Counters()
        self._next_health = 0.0
        self._next_claim = 0.0

    @classmethod
    def from_config(cls, cfg: AnprConfig, stop: threading.Event | None = None) -> Publisher:
        pc = cfg.publisher
        if pc.signing_key_file is None:
            raise ConfigError("publisher.signing_key_file is not set (create one with `anpr exchange-keygen`)")
        signer = Signer.from_pem_file(pc.signing_key_file, pc.key_id)
        return cls(cfg, connect(cfg.redis), make_transport(pc), signer, stop)

    def close(self) -> None:
        self._transport.close()
        self._r.close()

    # -- main loop -----------------------------------------------------------------------------

    def run(self, burst: bool = False) -> None:
        """Deliver until stopped; in burst mode, until nothing is left to read or claim.

        A Redis failure restarts the cycle from the own-pending step: whatever was read but not
        acknowledged when Redis went away is sent again (the receiver answers duplicates with 2xx).
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
            except redis.RedisError as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning("redis error (%r); starting over in %.1f s", exc, delay)
                self._stop.wait(delay)

    def _ensure_group(self) -> None:
        try:
            # From the start of the stream: events written before the first run are delivered too.
            self._r.xgroup_create(self._stream, self._cfg.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _drain_own_pending(self) -> None:
        """Re-deliver what this consumer read before a crash or restart (its own PEL)."""
        after = "0-0"
        while not self._stop.is_set():
            resp = self._r.xreadgroup(
                self._cfg.group, self._cfg.consumer, {self._stream: after}, count=self._cfg.batch_size
            )
            raw = stream_entries(resp)
            if not raw:
                return
            entries = self._with_delivery_counts(raw)
            log.info("re-delivering %d own pending entries", len(entries))
            self._process(entries)
            after = entries[-1].id

    def _claim_stale(self, force: bool) -> int:
        """Take over entries idle longer than claim_idle_s (their consumer is dead or stuck)."""
        now = time.monotonic()
        if not force and now < self._next_claim:
            return 0
        self._next_claim = now + min(self._cfg.claim_idle_s / 2, 30.0)
        cursor, total = "0-0", 0
        while not self._stop.is_set():
            resp: Any = self._r.xautoclaim(
                self._stream,
                self._cfg.group,
                self._cfg.consumer,
                int(self._cfg.claim_idle_s * 1000),
                start_id=cursor,
                count=self._cfg.batch_size,
            )
            # Redis 7 drops trimmed entries from the PEL itself (third element); 6.2 returns them as nil.
            raw = [(_id(i), f) for i, f in resp[1] if i is not None]
            if raw:
                log.info("claimed %d entries idle over %g s", len(raw), self._cfg.claim_idle_s)
                entries = self._with_delivery_counts(raw)
                self._process(entries)
                total += len(entries)
            cursor = _id(resp[0])
            if cursor == "0-0":
                return total
        return total

    def _read_new(self, block: bool) -> int:
        resp = self._r.xreadgroup(
            self._cfg.group,
            self._cfg.consumer,
            {self._stream: ">"},
            count=self._cfg.batch_size,
            block=self._cfg.block_ms if block else None,
        )
        raw = stream_entries(resp)
        if raw:
            self._process([_Entry(i, f) for i, f in raw])
        return len(raw)

    def _with_delivery_counts(self, raw: list[tuple[str, dict[bytes, bytes]]]) -> list[_Entry]:
        pending: list[dict[str, Any]] = self._r.xpending_range(
            self._stream, self._cfg.group, raw[0][0], raw[-1][0], len(raw), self._cfg.consumer
        )
        counts = {_id(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [_Entry(i, f, counts.get(i, 1)) for i, f in raw]

    # -- one batch -----------------------------------------------------------------------------

    def _process(self, entries: list[_Entry]) -> None:
        events: list[tuple[str, PlateEvent]] = []
        for e in entries:
            fields = {_text(k): _text(v) for k, v in e.fields.items()}
            if e.deliveries > self._cfg.max_deliveries:
                self._dead_letter(e.id, f"poison: read {e.deliveries} times without being delivered", fields)
                continue
            raw = e.fields.get(b"event")
            if raw is None:
                self._dead_letter(e.id, "malformed entry: no 'event' field", fields)
                continue
            try:
                events.append((e.id, PlateEvent.model_validate_json(raw)))
            except ValidationError as exc:
                self._dead_letter(e.id, f"malformed entry: not a PlateEvent: {_short(exc)}", fields)
        if not events:
            return
        images = self._images([ev for _, ev in events])
        outgoing: list[_Outgoing] = []
        for (entry_id, ev), image in zip(events, images, strict=True):
            try:
                env = Envelope(
                    message_id=ev.event_id,
                    sender=self._sender,
                    receiver=self._cfg.receiver,
                    sent_at=datetime.now(UTC),
                    event=ev,
                    plate_image=image,
                )
            except ValidationError as exc:  # e.g. an event id longer than the protocol allows
                self._dead_letter(
                    entry_id, f"cannot build envelope: {_short(exc)}", {"event": ev.model_dump(mode="json")}
                )
                continue
            payload = env.canonical()
            size = len(json.dumps(payload, ensure_ascii=False).encode()) + _SIGNATURE_BYTES
            if size > self._cfg.max_request_bytes:
                self._dead_letter(
                    entry_id,
                    f"message of {size} bytes exceeds publisher.max_request_bytes={self._cfg.max_request_bytes}",
                    {"event": ev.model_dump(mode="json")},
                )
                continue
            outgoing.append(_Outgoing(entry_id, ev, payload, size))
        for chunk in self._chunks(outgoing):
            if self._stop.is_set():
                return  # the rest stays pending and is re-delivered after the restart
            self._deliver(chunk)

    def _images(self, events: list[PlateEvent]) -> list[PlateImage | None]:
        mode = self._cfg.plate_image
        if mode == "none":
            return [None] * len(events)
        if mode == "reference":
            return [
                PlateImage(url=self._cfg.image_url_template.format(event_id=ev.event_id)) if ev.plate_image else None
                for ev in events
            ]
        wanted = [ev for ev in events if ev.plate_image]
        found: list[Any] = self._r.mget([self._keys.plate_image(ev.event_id) for ev in wanted]) if wanted else []
        blobs = {ev.event_id: b for ev, b in zip(wanted, found, strict=True) if isinstance(b, bytes)}
        # A crop that expired before delivery is not worth holding the event back: it goes without one.
        return [
            PlateImage(data=base64.b64encode(b).decode("ascii")) if (b := blobs.get(ev.event_id)) else None
            for ev in events
        ]

    def _chunks(self, outgoing: list[_Outgoing]) -> list[list[_Outgoing]]:
        chunks: list[list[_Outgoing]] = []
        size = 0
        for o in outgoing:
            if not chunks or size + o.size > self._cfg.max_request_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(o)
            size += o.size
        return chunks

    def _deliver(self, chunk: list[_Outgoing]) -> None:
        """Send until the partner takes the chunk (ack), refuses it (dead letter) or we are stopped."""
        attempt = 0
        while not self._stop.is_set():
            # Fresh signature (time, nonce) every attempt: a retry must not look like a replay.
            messages = [self._signer.sign_payload(o.payload) for o in chunk]
            self.counters.requests += 1
            try:
                self._transport.send(messages)
            except TransientError as exc:
                attempt += 1
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self._cfg.max_retry_after_s)
                else:
                    delay = self._backoff(attempt)
                self.counters.retried += len(chunk)
                self._r.hincrby(self._keys.publisher_stats, "retried", len(chunk))
                log.warning("delivery of %d failed (%s); retry %d in %.2f s", len(chunk), exc, attempt, delay)
                self._maybe_report_health()
                self._stop.wait(delay)
                continue
            except PermanentError as exc:
                if len(chunk) > 1:
                    # Find the message(s) the partner refuses; the others still go through.
                    for one in chunk:
                        self._deliver([one])
                else:
                    one = chunk[0]
                    self._dead_letter(
                        one.entry_id, f"partner refused: {exc}", {"event": one.event.model_dump(mode="json")}
                    )
                return
            n = self._ack(
                keys=[self._stream, self._keys.publisher_stats],
                args=[self._cfg.group, "delivered", *(o.entry_id for o in chunk)],
            )
            self.counters.delivered += int(n)
            return

    def _dead_letter(self, entry_id: str, reason: str, fields: dict[str, Any]) -> None:
        """Move an entry to the dead-letter stream with why, and the original fields for a re-drive."""
        n = self._dead(
            keys=[self._stream, self._keys.publisher_stats, self._keys.exchange_dead],
            args=[
                self._cfg.group,
                entry_id,
                reason,
                json.dumps(fields, ensure_ascii=False),
                self._cfg.consumer,
                datetime.now(UTC).isoformat(),
            ],
        )
        self.counters.dead_lettered += int(n)
        log.error("dead-lettered %s: %s", entry_id, reason)

    def _backoff(self, attempt: int) -> float:
        """Exponential with "equal jitter": never below half the step, so retries never hammer."""
        step = min(self._cfg.backoff_max_s, self._cfg.backoff_base_s * 2 ** min(attempt - 1, 30))
        return step / 2 + random.uniform(0, step / 2)

    # -- health --------------------------------------------------------------------------------

    def _maybe_report_health(self) -> None:
        if time.monotonic() >= self._next_health:
            self._report_health()

    def _report_health(self) -> None:
        self._next_health = time.monotonic() + self._cfg.health_interval_s
        try:
            status = {
                "consumer": self._cfg.consumer,
                "updated_at": time.time(),
                "process": {
                    "delivered": self.counters.delivered,
                    "retried": self.counters.retried,
                    "dead_lettered": self.counters.dead_lettered,
                    "requests": self.counters.requests,
                    "started_at": self.counters.started_at,
                },
                **group_lag(self._r, self._stream, self._cfg.group),
            }
            ttl = max(10, int(self._cfg.health_interval_s * 3))
            self._r.set(self._keys.publisher_health(self._cfg.consumer), json.dumps(status), ex=ttl)
        except redis.RedisError as exc:
            # Health is best effort: failing to report must not stop delivery (the key then expires).
            log.debug("health report failed: %r", exc)


def group_lag(r: redis.Redis, stream: str, group: str) -> dict[str, int | None]:
    """`lag`: entries the group has not read yet (None when Redis cannot tell); `pending`: read, not acked."""
    for g in r.xinfo_groups(stream):
        if _text(g["name"]) == group:
            lag = g.get("lag")
            return {"lag": None if lag is None else int(lag), "pending": int(g["pending"])}
    return {"lag": None, "pending": 0}


def check(cfg: AnprConfig) -> tuple[bool, dict[str, Any]]:
    """For `anpr publisher --check`: healthy when this consumer's health key is fresh (it has a TTL)."""
    r = connect(cfg.redis)
    keys = Keys(cfg.redis.prefix)
    try:
        raw = r.get(keys.publisher_health(cfg.publisher.consumer))
        totals = {_text(k): int(v) for k, v in r.hgetall(keys.publisher_stats).items()}
        report: dict[str, Any] = {
            "consumer": cfg.publisher.consumer,
            "health": json.loads(raw) if raw else None,
            "totals": totals,
            "dead_letter_stream_length": r.xlen(keys.exchange_dead),
        }
        if r.exists(keys.events):
            report.update(group_lag(r, keys.events, cfg.publisher.group))
    finally:
        r.close()
    return raw is not None, report


def stream_entries(resp: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of the one stream in an XREAD(GROUP) reply (a deleted entry has empty fields)."""
    if not resp:
        return []
    return [(_id(i), f or {}) for i, f in resp[0][1]]


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()[:3])[:300]
