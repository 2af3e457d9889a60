"""Deliver every plate event on our events stream to the partner customs service: signed, once, nothing lost.

A consumer group on the events stream (anpr/streams.py) gives at-least-once delivery; the receiver's
idempotency by message id (= event id) turns that into exactly-once storage. An entry is XACKed only
after the partner answered 2xx for it. Network errors, timeouts, 5xx and 429 are retried in place
(Retry-After honoured) for as long as it takes. A message the partner refuses (other 4xx), a
malformed entry and a poison entry go to the dead-letter stream with the reason.

A refusal of our credentials (401, or 403 `unknown_key`) is a configuration fault, not a fault of the
message: dead-lettering would burn the whole backlog in a second. Delivery pauses instead, says so in
the log, the state hash and /metrics at every attempt, and retries with backoff until the partner
accepts again. An operator re-queues dead letters (`anpr publisher dead-letters retry`) into a
stream of their own that the publisher also drains; the dead letter is removed in the same script
that re-queues it, so a retry repeated sends nothing twice.

Counters (delivered, retried, dead_lettered, config_faults, redriven) live in a Redis hash and
survive restarts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from anpr.config import AnprConfig, ConfigError
from anpr.exchange.envelope import Envelope, Party, PlateImage, Signer
from anpr.exchange.transport import Transport, make_transport
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import PlateEvent
from anpr.streams import Entry, GroupConsumer, PermanentError, StreamKeys, TransientError, check_block, group_lag, text

log = logging.getLogger(__name__)

# A message is its payload (as a JSON string) plus the signature object and wrapper: under this many bytes.
_SIGNATURE_BYTES = 320

# Re-queue a dead letter only if this call removes it: a repeated or concurrent retry re-queues nothing.
_REDRIVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[3], 'redriven', 1)
return id
"""

# Receiver error codes (anpr/exchange/receiver.py) that say our key or clock is wrong, not the message.
_CREDENTIAL_ERRORS = {"unsigned", "bad_signature", "timestamp_out_of_window", "unknown_key"}
_ERROR_CODE = re.compile(r'"error"\s*:\s*"([A-Za-z_]+)"')


class DeliveryPaused(Exception):
    """The partner refuses our credentials; in burst mode the run ends here, nothing dead-lettered."""


def config_fault(reason: str) -> str | None:
    """What is misconfigured, if a refusal (a PermanentError's text) is about our credentials and not the message.

    401 (unsigned, bad signature, clock off) and 403 `unknown_key` over HTTP; an ACL refusal (NOPERM)
    from the partner's Redis.
    """
    m = re.match(r"HTTP (\d{3}): (.*)", reason, re.DOTALL)
    if m:
        status, body = int(m[1]), m[2]
        code_match = _ERROR_CODE.search(body)
        code = code_match[1] if code_match else None
        if status == 401 or (status == 403 and code == "unknown_key"):
            hint = {
                "unknown_key": "the partner does not trust publisher.key_id; send them the public key or fix the id",
                "bad_signature": "publisher.signing_key_file does not match the key the partner holds for key_id",
                "timestamp_out_of_window": "our clock is off from the partner's (check NTP)",
            }.get(code or "", "the partner refuses our signature")
            return f"{hint} (HTTP {status} {code or ''}: {body[:200]})".replace(" :", ":")
        return None
    if reason.startswith("partner redis refused: NOPERM"):
        return f"the partner's Redis refuses our user ({reason[len('partner redis refused: ') :][:200]})"
    return None


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """An event serialised for the partner; signed at each attempt, so the signature is always fresh."""

    entry_id: str
    event: PlateEvent
    payload: str
    size: int


class Publisher(GroupConsumer):
    """The consumer-group loop. `run(burst=True)` drains the stream and returns (tests, catch-up jobs).

    `redrive=True` makes the consumer of re-queued dead letters instead of the events stream; `run`
    of the events publisher runs one alongside (`self.redriver`).
    """

    done_counter = "delivered"

    def __init__(
        self,
        cfg: AnprConfig,
        r: redis.Redis,
        transport: Transport,
        signer: Signer,
        stop: threading.Event | None = None,
        *,
        redrive: bool = False,
    ) -> None:
        pc = cfg.publisher
        check_block(pc, "publisher", cfg.redis)
        keys = Keys(cfg.redis.prefix)
        stream = keys.exchange_redrive if redrive else keys.events
        health = keys.publisher_health(f"{pc.consumer}.redrive" if redrive else pc.consumer)
        super().__init__(r, pc, StreamKeys(stream, keys.publisher_stats, health, keys.exchange_dead), stop)
        self._anpr = cfg
        self._cfg = pc
        self._keys = keys
        self._transport = transport
        self._signer = signer
        self._sender = Party(site=pc.sender_site, country=pc.sender_country)
        self._redrive = redrive
        self._burst = False
        self.requests = 0
        self.paused: str | None = None
        self.redriver: Publisher | None = None

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

    def health_extra(self) -> dict[str, Any]:
        return {"requests": self.requests, "paused": self.paused}

    @property
    def dead_lettered(self) -> int:
        """Entries this process (both streams) dead-lettered."""
        return self.counters.dead_lettered + (self.redriver.counters.dead_lettered if self.redriver else 0)

    def run(self, burst: bool = False) -> None:
        """Deliver events and re-queued dead letters until stopped (burst: until both are drained).

        Raises `DeliveryPaused` in burst mode when the partner refuses our credentials.
        """
        self._burst = burst
        if self._redrive:
            super().run(burst)
            return
        # A pause recorded by an earlier run may be fixed by now; the first refusal records it again.
        with contextlib.suppress(redis.RedisError):
            self._r.hdel(self._keys.publisher_state, "paused_reason", "paused_since")
        self.redriver = Publisher(self._anpr, self._r, self._transport, self._signer, self._stop, redrive=True)
        if burst:
            self.redriver.run(burst=True)
            super().run(burst=True)
            return
        thread = threading.Thread(target=self.redriver.run, name="publisher-redrive", daemon=True)
        thread.start()
        try:
            super().run()
        finally:
            self._stop.set()
            thread.join(timeout=30)

    # -- outcomes, recorded for --check and /metrics -------------------------------------------

    def ack(self, ids: list[str]) -> int:
        n = super().ack(ids)
        with contextlib.suppress(redis.RedisError):  # the entries are safe; only the judgement lags
            pipe = self._r.pipeline(transaction=True)
            if self._redrive and ids:
                pipe.xdel(self._stream, *ids)
            if n:
                pipe.hset(self._keys.publisher_state, mapping={"dead_streak": 0, "last_delivered_at": time.time()})
                pipe.hdel(self._keys.publisher_state, "paused_reason", "paused_since")
            pipe.execute()
        return n

    def dead_letter(self, entry_id: str, reason: str, fields: dict[str, Any]) -> None:
        before = self.counters.dead_lettered
        super().dead_letter(entry_id, reason, fields)
        with contextlib.suppress(redis.RedisError):
            pipe = self._r.pipeline(transaction=True)
            if self._redrive:
                pipe.xdel(self._stream, entry_id)
            if self.counters.dead_lettered > before:
                pipe.hincrby(self._keys.publisher_state, "dead_streak", 1)
                pipe.hset(self._keys.publisher_state, "last_dead_reason", reason[:300])
            pipe.execute()

    def _pause(self, fault: str, count: int) -> None:
        self.paused = fault
        with contextlib.suppress(redis.RedisError):
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._keys.publisher_state, "paused_reason", fault)
            pipe.hsetnx(self._keys.publisher_state, "paused_since", time.time())
            pipe.hincrby(self._keys.publisher_stats, "config_faults", 1)
            pipe.execute()
        log.error(
            "%s: delivery PAUSED, configuration fault: %s; %d events held back, none dead-lettered, retrying "
            "until the partner accepts",
            self._base.group,
            fault,
            count,
        )

    # -- one batch -----------------------------------------------------------------------------

    def handle(self, entries: list[Entry]) -> None:
        events: list[tuple[str, PlateEvent]] = []
        for e in entries:
            fields = e.text()
            raw = e.fields.get(b"event")
            if raw is None:
                self.dead_letter(e.id, "malformed entry: no 'event' field", fields)
                continue
            try:
                events.append((e.id, PlateEvent.model_validate_json(raw)))
            except ValidationError as exc:
                self.dead_letter(e.id, f"malformed entry: not a PlateEvent: {_short(exc)}", fields)
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
                self.dead_letter(
                    entry_id, f"cannot build envelope: {_short(exc)}", {"event": ev.model_dump(mode="json")}
                )
                continue
            payload = env.canonical()
            size = len(json.dumps(payload, ensure_ascii=False).encode()) + _SIGNATURE_BYTES
            if size > self._cfg.max_request_bytes:
                self.dead_letter(
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

        def send() -> bool:
            # Fresh signature (time, nonce) every attempt: a retry must not look like a replay.
            self.requests += 1
            try:
                self._transport.send([self._signer.sign_payload(o.payload) for o in chunk])
            except PermanentError as exc:
                fault = config_fault(str(exc))
                if fault is None:
                    raise
                self._pause(fault, len(chunk))
                if self._burst:
                    raise DeliveryPaused(fault) from None
                raise TransientError(f"paused: {fault}") from None
            if self.paused is not None:
                log.warning("%s: the partner accepts again; delivery resumed", self._base.group)
                self.paused = None
            return True

        try:
            if self.retry(send, count=len(chunk)) is None:
                return  # stopped: the chunk stays pending and is sent again after the restart
        except PermanentError as exc:
            if len(chunk) > 1:
                # Find the message(s) the partner refuses; the others still go through.
                for one in chunk:
                    self._deliver([one])
            else:
                one = chunk[0]
                self.dead_letter(one.entry_id, f"partner refused: {exc}", {"event": one.event.model_dump(mode="json")})
            return
        self.ack([o.entry_id for o in chunk])


# -- what an operator sees: --check, /metrics, dead letters ---------------------------------------


def report(r: redis.Redis, cfg: AnprConfig, now: float | None = None) -> dict[str, Any]:
    """Everything `--check` and /metrics judge by, from Redis alone (so it outlives the publisher process)."""
    now = time.time() if now is None else now
    pc = cfg.publisher
    keys = Keys(cfg.redis.prefix)
    raw = r.get(keys.publisher_health(pc.consumer))
    state = {text(k): text(v) for k, v in r.hgetall(keys.publisher_state).items()}
    oldest = [t for s in (keys.events, keys.exchange_redrive) if (t := _oldest_undelivered_ms(r, s, pc.group))]
    out: dict[str, Any] = {
        "consumer": pc.consumer,
        "health": json.loads(raw) if raw else None,
        "totals": {text(k): int(v) for k, v in r.hgetall(keys.publisher_stats).items()},
        "dead_letter_stream_length": r.xlen(keys.exchange_dead),
        "redrive_queue_length": r.xlen(keys.exchange_redrive),
        "paused": state.get("paused_reason"),
        "paused_since": float(state["paused_since"]) if "paused_since" in state else None,
        "dead_streak": int(state.get("dead_streak", 0)),
        "last_dead_reason": state.get("last_dead_reason"),
        "last_delivered_at": float(state["last_delivered_at"]) if "last_delivered_at" in state else None,
        "oldest_undelivered_age_s": round(max(0.0, now - min(oldest) / 1000), 3) if oldest else None,
    }
    if r.exists(keys.events):
        out.update(group_lag(r, keys.events, pc.group))
    return out


def problems(rep: dict[str, Any], cfg: AnprConfig) -> list[str]:
    """Why `--check` fails, one line each; empty when healthy."""
    pc = cfg.publisher
    out: list[str] = []
    if rep["health"] is None:
        out.append(f"no publisher '{pc.consumer}' reported health recently: it is not running or is stuck")
    if rep["paused"]:
        since = datetime.fromtimestamp(rep["paused_since"] or 0, UTC).isoformat(timespec="seconds")
        out.append(f"delivery paused since {since}, configuration fault: {rep['paused']}")
    if rep["dead_streak"] >= pc.check_dead_streak:
        out.append(
            f"the last {rep['dead_streak']} deliveries were all dead-lettered (latest: {rep['last_dead_reason']}); "
            "see `anpr publisher dead-letters list`"
        )
    age = rep["oldest_undelivered_age_s"]
    if age is not None and age > pc.check_max_age_s:
        out.append(
            f"the oldest undelivered event is {age:.0f} s old (publisher.check_max_age_s={pc.check_max_age_s:g})"
        )
    return out


def check(cfg: AnprConfig) -> tuple[bool, dict[str, Any]]:
    """For `anpr publisher --check`: healthy when a publisher reports, delivers and is not paused."""
    r = connect(cfg.redis)
    try:
        rep = report(r, cfg)
    finally:
        r.close()
    rep["problems"] = problems(rep, cfg)
    return not rep["problems"], rep


def _oldest_undelivered_ms(r: redis.Redis, stream: str, group: str) -> int | None:
    """Entry-id time of the oldest entry the group has not acknowledged (pending or not yet read)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream: nothing waits
        return None
    g = next((g for g in groups if text(g["name"]) == group), None)
    ids: list[str] = []
    if g is None:
        first: Any = r.xrange(stream, count=1)
    else:
        if int(g["pending"]):
            summary: Any = r.xpending(stream, group)
            ids.append(text(summary["min"]))
        first = r.xrange(stream, min="(" + text(g["last-delivered-id"]), count=1)
    if first:
        ids.append(text(first[0][0]))
    return min(int(i.split("-")[0]) for i in ids) if ids else None


class PublisherMetrics(Collector):
    """Prometheus view of `report`, read from Redis at each scrape so the totals survive restarts."""

    def __init__(self, cfg: AnprConfig) -> None:
        self._cfg = cfg
        self._r = connect(cfg.redis)

    def collect(self) -> Iterator[Metric]:
        try:
            rep = report(self._r, self._cfg)
        except redis.RedisError as exc:
            log.warning("metrics: redis unavailable: %r", exc)
            yield GaugeMetricFamily("anpr_publisher_redis_up", "1 when the publisher's Redis answers", value=0)
            return
        yield GaugeMetricFamily("anpr_publisher_redis_up", "1 when the publisher's Redis answers", value=1)
        totals = rep["totals"]
        for name, doc in (
            ("delivered", "events the partner acknowledged"),
            ("retried", "event deliveries retried (network, 5xx, 429, paused)"),
            ("dead_lettered", "events set aside for an operator (anpr publisher dead-letters list)"),
            ("config_faults", "attempts refused for our credentials (401, 403 unknown_key): delivery paused"),
            ("redriven", "dead letters an operator re-queued"),
        ):
            yield CounterMetricFamily(f"anpr_publisher_{name}", doc, value=totals.get(name, 0))
        gauges: list[tuple[str, str, float | None]] = [
            ("dead_letters", "entries in the dead-letter stream", rep["dead_letter_stream_length"]),
            ("redrive_queue", "re-queued dead letters not yet delivered", rep["redrive_queue_length"]),
            ("lag", "events not yet read by the publisher group", rep.get("lag")),
            ("pending", "events read, not yet acknowledged by the partner", rep.get("pending")),
            ("oldest_undelivered_age_seconds", "age of the oldest undelivered event", rep["oldest_undelivered_age_s"]),
            ("paused", "1 while delivery is paused by a configuration fault", 1 if rep["paused"] else 0),
            ("dead_streak", "deliveries in a row that went to dead letters", rep["dead_streak"]),
            ("up", "1 while a publisher reports health", 0 if rep["health"] is None else 1),
        ]
        for name, doc, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(f"anpr_publisher_{name}", doc, value=value)


def serve_metrics(cfg: AnprConfig) -> None:
    """Serve /metrics on publisher.metrics_host:metrics_port in a thread (OSError if the port is taken)."""
    registry = CollectorRegistry()
    registry.register(PublisherMetrics(cfg))
    start_http_server(cfg.publisher.metrics_port, addr=cfg.publisher.metrics_host, registry=registry)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream, as an operator sees it."""

    id: str
    dead_at: str
    reason: str
    source_stream: str
    source_id: str
    fields: dict[str, Any]

    @property
    def event(self) -> dict[str, Any] | None:
        ev = self.fields.get("event")
        if isinstance(ev, str):
            with contextlib.suppress(ValueError):
                ev = json.loads(ev)
        return ev if isinstance(ev, dict) else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dead_at": self.dead_at,
            "reason": self.reason,
            "source_stream": self.source_stream,
            "source_id": self.source_id,
            "fields": self.fields,
        }


def dead_letters(r: redis.Redis, keys: Keys, count: int | None = None) -> list[DeadLetter]:
    """The dead letters, oldest first."""
    entries: Any = r.xrange(keys.exchange_dead, count=count)
    return [_dead_letter(entry_id, raw) for entry_id, raw in entries]


def _dead_letter(entry_id: bytes | str, raw: dict[bytes, bytes]) -> DeadLetter:
    f = {text(k): text(v) for k, v in raw.items()}
    try:
        fields = json.loads(f.get("fields", "{}"))
    except ValueError:
        fields = {"raw": f.get("fields", "")}
    return DeadLetter(
        id=text(entry_id),
        dead_at=f.get("dead_at", ""),
        reason=f.get("reason", ""),
        source_stream=f.get("source_stream", ""),
        source_id=f.get("source_id", ""),
        fields=fields if isinstance(fields, dict) else {"raw": fields},
    )


def redrive(r: redis.Redis, keys: Keys, ids: list[str]) -> tuple[list[str], list[str]]:
    """Re-queue dead letters for the publisher: (re-queued ids, ids not found, e.g. re-queued already).

    Each is removed from the dead-letter stream by the script that re-queues it, so it is sent again
    at most once per dead-lettering however often (or concurrently) this runs.
    """
    script = r.register_script(_REDRIVE)
    done: list[str] = []
    missing: list[str] = []
    for dead_id in ids:
        found: Any = r.xrange(keys.exchange_dead, min=dead_id, max=dead_id)
        if not found:
            missing.append(dead_id)
            continue
        dl = _dead_letter(*found[0])
        fields = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in dl.fields.items()}
        fields |= {"redriven_from": dl.id, "dead_reason": dl.reason}
        flat = [x for kv in fields.items() for x in kv]
        if script(keys=[keys.exchange_dead, keys.exchange_redrive, keys.publisher_stats], args=[dl.id, *flat]):
            done.append(dl.id)
        else:
            missing.append(dl.id)
    return done, missing


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()[:3])[:300]
