"""Deliver every plate event on our events stream to the partner customs service: signed, once, nothing lost.

A consumer group on the events stream (anpr/streams.py) gives at-least-once delivery; the receiver's
idempotency by message id (= event id) turns that into exactly-once storage. An entry is XACKed only
after the partner answered 2xx for it. Network errors, timeouts, 5xx and 429 are retried in place
(Retry-After honoured) for as long as it takes. A message the partner refuses (other 4xx), a
malformed entry and a poison entry go to the dead-letter stream with the reason.

Counters (delivered, retried, dead_lettered) live in a Redis hash and survive restarts.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from anpr.config import AnprConfig, ConfigError
from anpr.exchange.envelope import Envelope, Party, PlateImage, Signer
from anpr.exchange.transport import Transport, make_transport
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import PlateEvent
from anpr.streams import Entry, GroupConsumer, PermanentError, StreamKeys, check_block, group_lag, text

log = logging.getLogger(__name__)

# A message is its payload (as a JSON string) plus the signature object and wrapper: under this many bytes.
_SIGNATURE_BYTES = 320


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """An event serialised for the partner; signed at each attempt, so the signature is always fresh."""

    entry_id: str
    event: PlateEvent
    payload: str
    size: int


class Publisher(GroupConsumer):
    """The consumer-group loop. `run(burst=True)` drains the stream and returns (tests, catch-up jobs)."""

    done_counter = "delivered"

    def __init__(
        self,
        cfg: AnprConfig,
        r: redis.Redis,
        transport: Transport,
        signer: Signer,
        stop: threading.Event | None = None,
    ) -> None:
        pc = cfg.publisher
        check_block(pc, "publisher", cfg.redis)
        keys = Keys(cfg.redis.prefix)
        names = StreamKeys(keys.events, keys.publisher_stats, keys.publisher_health(pc.consumer), keys.exchange_dead)
        super().__init__(r, pc, names, stop)
        self._cfg = pc
        self._keys = keys
        self._transport = transport
        self._signer = signer
        self._sender = Party(site=pc.sender_site, country=pc.sender_country)
        self.requests = 0

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
        return {"requests": self.requests}

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
            self._transport.send([self._signer.sign_payload(o.payload) for o in chunk])
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


def check(cfg: AnprConfig) -> tuple[bool, dict[str, Any]]:
    """For `anpr publisher --check`: healthy when this consumer's health key is fresh (it has a TTL)."""
    r = connect(cfg.redis)
    keys = Keys(cfg.redis.prefix)
    try:
        raw = r.get(keys.publisher_health(cfg.publisher.consumer))
        totals = {text(k): int(v) for k, v in r.hgetall(keys.publisher_stats).items()}
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


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()[:3])[:300]
