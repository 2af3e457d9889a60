"""Hits, crossing alerts and (opt-in) plate events pushed to an MQTT broker and to signed webhooks.

Each sink reads each of its streams in a consumer group of its own (`<notify.group>-<sink name>`), so a
broker or a webhook that is away only delays its own messages. Delivery is at least once: an entry is
acknowledged only after the broker's PUBACK (QoS 1) or a 2xx, so a crash or a lost reply sends it
again. Receivers deduplicate by the id in the payload, which webhooks also get as `X-Anpr-Id`.

Webhook bodies are signed with HMAC-SHA256 over `"<unix seconds>." + body` with a secret shared with
the receiver; `verify_signature` is the receiver's side of it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ValidationError

from anpr.config import AnprConfig, ConfigError, MqttConfig, Topic, WebhookConfig
from anpr.exchange.transport import post
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import CrossingAlert, Hit, PlateEvent
from anpr.streams import Entry, GroupConsumer, PermanentError, StreamKeys, TransientError, check_block

log = logging.getLogger(__name__)

# Held queued in paho while the broker is slow to ack; beyond it a publish fails fast and is retried.
_MAX_QUEUED = 1000


class Sink(Protocol):
    """Where notifications go; `send` makes one attempt and raises TransientError or PermanentError."""

    name: str

    def send(self, topic: Topic, message_id: str, body: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Source:
    """What one topic's stream entries hold: the field, the model to check it against, its id."""

    stream: Callable[[Keys], str]
    field: bytes
    model: type[BaseModel]
    message_id: Callable[[Any], str]


_SOURCES: dict[Topic, _Source] = {
    "hits": _Source(lambda k: k.hits, b"hit", Hit, lambda m: m.hit_id),
    "alerts": _Source(lambda k: k.crossing_alerts, b"alert", CrossingAlert, lambda m: m.alert_id),
    "events": _Source(lambda k: k.events, b"event", PlateEvent, lambda m: m.event_id),
}


# -- MQTT ------------------------------------------------------------------------------------------


class MqttSink:
    """Publishes to `<topic_prefix>/<site>/<topic>` and waits for the broker's ack.

    paho keeps the connection in its own thread and reconnects by itself; while it is down, `send`
    fails at once (nothing is queued in paho, so a retry does not pile up copies).
    """

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, site: str, client_id: str | None = None, reconnect_max_s: int = 30) -> None:
        self._cfg = cfg
        self._site = site
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"anpr-notify-{site}-{uuid.uuid4().hex[:8]}"
        )
        if cfg.username is not None:
            self._client.username_pw_set(cfg.username, cfg.password)
        self._client.max_queued_messages_set(_MAX_QUEUED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=max(1, reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._last_error = "not connected yet"
        # Asynchronous: a broker that is down at start is retried by paho's loop like a lost connection.
        self._client.connect_async(cfg.host, cfg.port)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def topic(self, topic: Topic) -> str:
        return f"{self._cfg.topic_prefix}/{self._site}/{topic}"

    def send(self, topic: Topic, message_id: str, body: bytes) -> None:
        where = f"mqtt://{self._cfg.host}:{self._cfg.port}"
        if not self._client.is_connected():
            raise TransientError(f"{where}: {self._last_error}")
        info = self._client.publish(self.topic(topic), body, qos=self._cfg.qos)
        try:
            info.wait_for_publish(self._cfg.timeout_s)
        except (RuntimeError, ValueError) as exc:  # the connection dropped, or paho's queue is full
            raise TransientError(f"{where}: {exc}") from None
        if not info.is_published():
            raise TransientError(f"{where}: no ack for {message_id} within {self._cfg.timeout_s} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._last_error = f"broker refused the connection: {reason}"
            log.error("mqtt %s:%d: %s", self._cfg.host, self._cfg.port, self._last_error)
        else:
            log.info("mqtt %s:%d: connected", self._cfg.host, self._cfg.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._last_error = f"disconnected: {reason}"
        log.warning("mqtt %s:%d: %s; reconnecting", self._cfg.host, self._cfg.port, reason)


# -- webhooks --------------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Anpr-Signature` value: the timestamp is signed too, so an old request cannot be replayed."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, max_skew_s: float = 300
) -> bool:
    """For a webhook receiver: whether a request is ours, unaltered and recent.

    Pass the raw body and the `X-Anpr-Timestamp` and `X-Anpr-Signature` headers as received, and the
    current unix time. A request signed more than `max_skew_s` from `now` is refused, which bounds
    replays; a genuine re-delivery is signed afresh, and is recognised by its `X-Anpr-Id`.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > max_skew_s:
        return False
    # Constant-time, so the comparison does not leak how much of a forged signature was right.
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode("utf-8", "replace"))


def read_secret(cfg: WebhookConfig) -> bytes:
    """The shared secret of a webhook, surrounding whitespace (a trailing newline) removed."""
    where = f"notify.webhooks[{cfg.name}].secret_file"
    try:
        secret = cfg.secret_file.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {cfg.secret_file}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{where}: {cfg.secret_file} is empty")
    return secret


class WebhookSink:
    """POSTs each message to a URL with `X-Anpr-Topic`, `X-Anpr-Id`, `X-Anpr-Timestamp`, `X-Anpr-Signature`.

    Responses are classified like the partner exchange's (anpr/exchange/transport.py): 2xx delivered;
    5xx, 408, 425, 429 and network faults retried (Retry-After honoured); any other status refused.
    """

    def __init__(self, cfg: WebhookConfig, clock: Callable[[], float] = time.time) -> None:
        self.name = cfg.name
        self._url = cfg.url
        self._secret = read_secret(cfg)
        self._clock = clock
        self._client = httpx.Client(timeout=cfg.timeout_s)

    def send(self, topic: Topic, message_id: str, body: bytes) -> None:
        # Signed at each attempt, so a retry after a long outage is not refused as too old.
        timestamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            "x-anpr-topic": topic,
            "x-anpr-id": message_id,
            "x-anpr-timestamp": timestamp,
            "x-anpr-signature": sign(self._secret, timestamp, body),
        }
        post(self._client, self._url, body, headers)

    def close(self) -> None:
        self._client.close()


# -- the consumer ----------------------------------------------------------------------------------


class Notifier(GroupConsumer):
    """Sends one stream's entries to one sink, in stream order, each acknowledged once sent.

    At least once: a send whose ack was lost, or a crash between send and XACK, sends it again
    (MQTT QoS 1 and webhooks alike); receivers deduplicate by `X-Anpr-Id` / the id in the payload.
    A sink that is away is retried in place with backoff, never skipped; one that refuses a message
    (4xx) sends it to the dead letters with the reason and goes on with the next.
    """

    done_counter = "sent"

    def __init__(
        self, cfg: AnprConfig, r: redis.Redis, sink: Sink, topic: Topic, stop: threading.Event | None = None
    ) -> None:
        check_block(cfg.notify, "notify", cfg.redis)
        keys = Keys(cfg.redis.prefix)
        group = f"{cfg.notify.group}-{sink.name}"
        consumer = cfg.notify.consumer
        self._source = _SOURCES[topic]
        names = StreamKeys(
            self._source.stream(keys),
            keys.consumer_stats(group),
            keys.consumer_health(f"{group}-{topic}", consumer),  # one per stream: each reports its own lag
            keys.dead_letters(group),
        )
        super().__init__(r, cfg.notify.model_copy(update={"group": group}), names, stop)
        self.sink = sink
        self.topic = topic

    def handle(self, entries: list[Entry]) -> None:
        field = self._source.field.decode()
        for e in entries:
            if self.stopping:
                return  # the rest stays pending and is sent after the restart
            raw = e.fields.get(self._source.field)
            if raw is None:
                self.dead_letter(e.id, f"malformed entry: no '{field}' field", e.text())
                continue
            try:
                message_id = self._source.message_id(self._source.model.model_validate_json(raw))
            except ValidationError as exc:
                self.dead_letter(e.id, f"malformed entry: not a {self._source.model.__name__}: {_short(exc)}", e.text())
                continue
            try:
                if self.retry(functools.partial(self._send, message_id, raw)) is None:
                    return  # stopped while retrying: pending, sent again after the restart
            except PermanentError as exc:
                self.dead_letter(e.id, f"{self.sink.name} refused {message_id}: {exc}", e.text())
                continue
            self.ack([e.id])

    def _send(self, message_id: str, body: bytes) -> bool:
        self.sink.send(self.topic, message_id, body)
        return True


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3])


def build_sinks(cfg: AnprConfig) -> list[tuple[Sink, list[Topic]]]:
    """Every enabled sink with the topics it gets; ConfigError when none is, or a secret is unreadable."""
    nc = cfg.notify
    if not nc.mqtt.enabled and not nc.webhooks:
        raise ConfigError("nothing to notify: set notify.mqtt.enabled or add notify.webhooks")
    names = [w.name for w in nc.webhooks] + (["mqtt"] if nc.mqtt.enabled else [])
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"notify.webhooks: names must be unique and not 'mqtt' when MQTT is on; repeated: {dupes}")
    sinks: list[tuple[Sink, list[Topic]]] = []
    try:
        for w in nc.webhooks:  # secrets first: a missing one fails before any connection is opened
            sinks.append((WebhookSink(w), list(dict.fromkeys(w.topics))))
        if nc.mqtt.enabled:
            topics: list[Topic] = ["hits", "alerts", "events"] if nc.events else ["hits", "alerts"]
            reconnect_max = max(1, int(nc.backoff_max_s))
            sinks.append((MqttSink(nc.mqtt, cfg.site.name, reconnect_max_s=reconnect_max), topics))
    except BaseException:
        for sink, _ in sinks:
            sink.close()
        raise
    return sinks


def run_notifiers(cfg: AnprConfig, stop: threading.Event, burst: bool = False) -> int:
    """Run a notifier per sink and stream, each in its own thread, until `stop` (burst: until all drained).

    Returns how many ran. A notifier that dies of an unexpected error stops the others, and the error
    is raised here, so the process exits and its supervisor restarts it rather than one sink going quiet.
    """
    sinks = build_sinks(cfg)
    r = connect(cfg.redis)
    failed: list[BaseException] = []
    try:
        notifiers = [Notifier(cfg, r, sink, topic, stop) for sink, topics in sinks for topic in topics]

        def work(n: Notifier) -> None:
            try:
                n.run(burst=burst)
            except BaseException as exc:
                log.warning("notifier %s/%s stopped: %r", n.sink.name, n.topic, exc)
                failed.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=work, args=(n,), name=f"notify-{n.sink.name}-{n.topic}", daemon=True)
            for n in notifiers
        ]
        log.info("notifying %s", ", ".join(t.name.removeprefix("notify-") for t in threads))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for sink, _ in sinks:
            sink.close()
        r.close()
    if failed:
        raise failed[0]
    return len(notifiers)
