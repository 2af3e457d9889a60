"""Notifications against a real Mosquitto, a real HTTP receiver (uvicorn) and the shared Redis.

Each test publishes under an MQTT topic prefix and a Redis key prefix of its own, so tests never see
each other's messages.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
import uvicorn
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import free_port, make_event

from anpr.config import AnprConfig, ConfigError, load_config
from anpr.keys import Keys
from anpr.notify import MqttSink, Notifier, WebhookSink, run_notifiers, verify_signature
from anpr.redis_client import connect
from anpr.schema import CrossingAlert, Hit, MatchMode, WatchlistEntry

REPO = Path(__file__).resolve().parents[1]
SITE = "ua-porubne"
SECRET = b"s3cret-shared-with-the-receiver"
FAST = {"backoff_base_s": 0.05, "backoff_max_s": 0.2, "block_ms": 50, "consumer": "notify-1"}


# -- messages and config -------------------------------------------------------------------------


def make_hit(i: int) -> Hit:
    ev = make_event(i, site=SITE)
    entry = WatchlistEntry(entry_id=f"w{i}", plate=ev.plate, reason="stolen", added_by="officer-7")
    return Hit(
        hit_id=Hit.make_id(ev.event_id, entry.entry_id),
        matched_as=MatchMode.EXACT,
        raised_at=datetime(2025, 6, 1, 9, 0, tzinfo=UTC),
        event=ev,
        entry=entry,
    )


def make_alert(i: int) -> CrossingAlert:
    ev = make_event(100 + i, site=SITE)
    return CrossingAlert(
        alert_id=f"alert-{i}",
        kind="exited_not_entered",
        event_id=ev.event_id,
        plate=ev.plate,
        site=SITE,
        seen_at=ev.last_seen,
        raised_at=datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        detail="left md-leuseni, not seen here within 30 min",
    )


def config_dict(keys: Keys, **notify: Any) -> dict[str, Any]:
    return {
        "redis": {"url": "redis://127.0.0.1:6379/0", "prefix": keys.prefix},
        "site": {"name": SITE},
        "notify": {**FAST, **notify},
    }


def make_cfg(keys: Keys, **notify: Any) -> AnprConfig:
    return load_config(None, **config_dict(keys, **notify))


def add(r: redis.Redis, stream: str, field_name: str, body: str | bytes) -> str:
    entry_id = r.xadd(stream, {field_name: body})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pending(r: redis.Redis, stream: str, group: str) -> int:
    return int(r.xpending(stream, group)["pending"])


def stats(r: redis.Redis, keys: Keys, group: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.consumer_stats(group)).items()}


# -- a subscriber and a broker of our own ----------------------------------------------------------


class Subscriber:
    """A paho client subscribed at QoS 1; collects (topic, payload) in arrival order."""

    def __init__(self, port: int, topic: str, client_id: str = "", persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._topic = topic
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(self._topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def by_topic(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        with self._lock:
            for topic, payload in self.messages:
                out.setdefault(topic, []).append(payload)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def subscriber(topic_prefix: str) -> Iterator[Subscriber]:
    sub = Subscriber(1883, f"{topic_prefix}/#")
    yield sub
    sub.close()


class Mosquitto:
    """Our own broker to stop and restart; it keeps sessions on disk, so the subscriber's survives."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {tmp}/\nlog_dest file {tmp}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(self.conf)])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the sessions to disk
            self.proc.wait(timeout=10)


# -- a webhook receiver --------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int
    at: float


@dataclass
class Receiver:
    """Starlette app on uvicorn in a thread; `answer(message_id)` picks each response (default 200)."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    answer: Callable[[str], tuple[int, dict[str, str]]] = lambda _id: (200, {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        return [q for q in self.requests if q.status == 200]

    def delivered_ids(self) -> list[str]:
        return [q.headers["x-anpr-id"] for q in self.delivered()]

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        h = {k.lower(): v for k, v in request.headers.items()}
        ok = verify_signature(SECRET, h.get("x-anpr-timestamp", ""), body, h.get("x-anpr-signature", ""), time.time())
        status, headers = self.answer(h.get("x-anpr-id", "")) if ok else (401, {})
        self.requests.append(Received(h, body, ok, status, time.monotonic()))
        return Response(b"bad request: plate unknown" if status == 400 else b"", status_code=status, headers=headers)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    app = Starlette(routes=[Route("/hook", rec._hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=rec.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the receiver to start")
    yield rec
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_bytes(SECRET + b"\n")  # as an editor saves it: the newline is not part of the secret
    return path


def webhook(rec: Receiver, secret_file: Path, topics: list[str] | None = None) -> dict[str, Any]:
    return {"name": "ops", "url": rec.url, "secret_file": str(secret_file), "topics": topics or ["hits", "alerts"]}


# -- MQTT ------------------------------------------------------------------------------------------


def test_mqtt_publishes_each_stream_on_its_topic_events_only_when_enabled(
    keys: Keys, client: redis.Redis, subscriber: Subscriber, topic_prefix: str
) -> None:
    hit, alert, event = make_hit(1), make_alert(1), make_event(7, site=SITE)
    hit_json, alert_json, event_json = hit.model_dump_json(), alert.model_dump_json(), event.model_dump_json()
    add(client, keys.hits, "hit", hit_json)
    add(client, keys.crossing_alerts, "alert", alert_json)
    add(client, keys.events, "event", event_json)
    base = f"{topic_prefix}/{SITE}"

    assert (
        run_notifiers(make_cfg(keys, mqtt={"enabled": True, "topic_prefix": topic_prefix}), threading.Event(), True)
        == 2
    )
    wait_until(lambda: len(subscriber.messages) >= 2, "hits and alerts")
    time.sleep(0.3)  # time for a stray events message to arrive, were one sent
    assert subscriber.by_topic() == {f"{base}/hits": [hit_json.encode()], f"{base}/alerts": [alert_json.encode()]}
    assert client.xinfo_groups(keys.events) == []  # no notifier reads the events stream
    assert stats(client, keys, "notify-mqtt")["sent"] == 2

    cfg = make_cfg(keys, events=True, mqtt={"enabled": True, "topic_prefix": topic_prefix})
    assert run_notifiers(cfg, threading.Event(), burst=True) == 3
    wait_until(lambda: len(subscriber.messages) >= 3, "the event")
    time.sleep(0.3)
    # The exact JSON of the stream, schema_version included; hits and alerts already sent are not sent again.
    assert subscriber.by_topic() == {
        f"{base}/hits": [hit_json.encode()],
        f"{base}/alerts": [alert_json.encode()],
        f"{base}/events": [event_json.encode()],
    }
    assert b'"schema_version":1' in subscriber.by_topic()[f"{base}/events"][0]


def test_broker_outage_retries_without_ack_until_the_broker_is_back(
    keys: Keys, client: redis.Redis, tmp_path: Path, topic_prefix: str
) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, f"{topic_prefix}/#", client_id=f"sub-{uuid.uuid4().hex[:8]}", persistent=True)
    cfg = make_cfg(keys, mqtt={"enabled": True, "port": broker.port, "topic_prefix": topic_prefix, "timeout_s": 2})
    sink = MqttSink(cfg.notify.mqtt, SITE, reconnect_max_s=1)
    stop = threading.Event()
    notifier = Notifier(cfg, connect(cfg.redis), sink, "hits", stop)
    thread = threading.Thread(target=notifier.run, daemon=True)
    try:
        wait_until(lambda: sink.connected, "the sink to connect")
        thread.start()
        broker.stop()
        wait_until(lambda: not sink.connected, "the sink to see the broker gone")

        hit = make_hit(2)
        add(client, keys.hits, "hit", hit.model_dump_json())
        wait_until(lambda: notifier.counters.retried >= 3, "retries")
        assert pending(client, keys.hits, "notify-mqtt") == 1
        assert notifier.counters.done == 0
        assert "sent" not in stats(client, keys, "notify-mqtt")

        broker.start()  # same port
        wait_until(lambda: len(sub.messages) >= 1, "the hit after the restart", timeout=30)
        wait_until(lambda: notifier.counters.done == 1, "the ack")
        assert sub.messages[0] == (f"{topic_prefix}/{SITE}/hits", hit.model_dump_json().encode())
        assert pending(client, keys.hits, "notify-mqtt") == 0
        time.sleep(0.2)
        assert notifier.counters.done == 1
        assert stats(client, keys, "notify-mqtt")["sent"] == 1
    finally:
        stop.set()
        thread.join(timeout=10)
        sink.close()
        sub.close()
        broker.stop()


# -- webhooks ----------------------------------------------------------------------------------------


def test_webhook_posts_are_signed_and_carry_the_id(
    keys: Keys, client: redis.Redis, receiver: Receiver, secret_file: Path
) -> None:
    hit, alert, event = make_hit(3), make_alert(3), make_event(9, site=SITE)
    add(client, keys.hits, "hit", hit.model_dump_json())
    add(client, keys.crossing_alerts, "alert", alert.model_dump_json())
    add(client, keys.events, "event", event.model_dump_json())
    cfg = make_cfg(keys, webhooks=[webhook(receiver, secret_file, ["hits", "alerts", "events"])])

    assert run_notifiers(cfg, threading.Event(), burst=True) == 3
    got = {q.headers["x-anpr-topic"]: q for q in receiver.requests}
    assert set(got) == {"hits", "alerts", "events"}
    assert all(q.verified and q.status == 200 for q in got.values())
    assert got["hits"].headers["x-anpr-id"] == hit.hit_id
    assert got["alerts"].headers["x-anpr-id"] == alert.alert_id
    assert got["events"].headers["x-anpr-id"] == event.event_id
    assert got["hits"].body == hit.model_dump_json().encode()
    assert got["hits"].headers["content-type"] == "application/json"
    assert stats(client, keys, "notify-ops")["sent"] == 3

    q = got["hits"]
    ts, sig = q.headers["x-anpr-timestamp"], q.headers["x-anpr-signature"]
    assert sig.startswith("sha256=")
    assert abs(int(ts) - time.time()) < 60
    assert verify_signature(SECRET, ts, q.body, sig, now=int(ts) + 299)
    assert not verify_signature(b"wrong secret", ts, q.body, sig, now=time.time())
    assert not verify_signature(SECRET, ts, q.body, sig, now=int(ts) + 301)  # too old: a replay
    assert not verify_signature(SECRET, ts, q.body + b" ", sig, now=time.time())
    assert not verify_signature(SECRET, str(int(ts) + 1), q.body, sig, now=time.time())
    assert not verify_signature(SECRET, "yesterday", q.body, sig, now=time.time())
    assert not verify_signature(SECRET, ts, q.body, "sha256=ünicode", now=time.time())


def test_webhook_5xx_is_retried_until_delivered_once(
    keys: Keys, client: redis.Redis, receiver: Receiver, secret_file: Path
) -> None:
    answers = [(503, {}), (503, {})]
    receiver.answer = lambda _id: answers.pop(0) if answers else (200, {})
    hit = make_hit(4)
    add(client, keys.hits, "hit", hit.model_dump_json())
    cfg = make_cfg(keys, webhooks=[webhook(receiver, secret_file, ["hits"])])

    assert run_notifiers(cfg, threading.Event(), burst=True) == 1
    assert [q.status for q in receiver.requests] == [503, 503, 200]
    assert receiver.delivered_ids() == [hit.hit_id]
    assert all(q.verified for q in receiver.requests)  # each attempt signed afresh
    assert stats(client, keys, "notify-ops") == {"sent": 1, "retried": 2}
    assert pending(client, keys.hits, "notify-ops") == 0


def test_webhook_429_retry_after_is_honoured(
    keys: Keys, client: redis.Redis, receiver: Receiver, secret_file: Path
) -> None:
    answers: list[tuple[int, dict[str, str]]] = [(429, {"Retry-After": "1"})]
    receiver.answer = lambda _id: answers.pop(0) if answers else (200, {})
    add(client, keys.crossing_alerts, "alert", make_alert(5).model_dump_json())
    cfg = make_cfg(keys, webhooks=[webhook(receiver, secret_file, ["alerts"])])

    run_notifiers(cfg, threading.Event(), burst=True)
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    # Backoff alone would wait at most backoff_max_s (0.2 s).
    assert second.at - first.at >= 0.95
    assert stats(client, keys, "notify-ops") == {"sent": 1, "retried": 1}


def test_refused_and_malformed_entries_are_dead_lettered_and_the_next_still_goes(
    keys: Keys, client: redis.Redis, receiver: Receiver, secret_file: Path
) -> None:
    refused, good = make_hit(6), make_hit(7)
    receiver.answer = lambda message_id: (400, {}) if message_id == refused.hit_id else (200, {})
    refused_entry = add(client, keys.hits, "hit", refused.model_dump_json())
    no_field = add(client, keys.hits, "other", "x")
    not_json = add(client, keys.hits, "hit", "{not json")
    add(client, keys.hits, "hit", good.model_dump_json())
    cfg = make_cfg(keys, webhooks=[webhook(receiver, secret_file, ["hits"])])

    run_notifiers(cfg, threading.Event(), burst=True)
    assert receiver.delivered_ids() == [good.hit_id]
    assert [q.status for q in receiver.requests] == [400, 200]  # a refusal is not retried
    dead = {f[b"source_id"].decode(): f[b"reason"].decode() for _, f in client.xrange(keys.dead_letters("notify-ops"))}
    assert set(dead) == {refused_entry, no_field, not_json}
    assert "HTTP 400" in dead[refused_entry] and "plate unknown" in dead[refused_entry]
    assert "no 'hit' field" in dead[no_field]
    assert "not a Hit" in dead[not_json]
    assert stats(client, keys, "notify-ops") == {"sent": 1, "dead_lettered": 3}
    assert pending(client, keys.hits, "notify-ops") == 0


def test_killed_notifier_pending_entries_are_sent_by_its_successor(
    keys: Keys, client: redis.Redis, receiver: Receiver, secret_file: Path, tmp_path: Path
) -> None:
    hits = [make_hit(10 + i) for i in range(5)]
    first_two = {h.hit_id for h in hits[:2]}
    receiver.answer = lambda message_id: (200, {}) if message_id in first_two else (503, {})
    for h in hits:
        add(client, keys.hits, "hit", h.model_dump_json())
    config = config_dict(keys, webhooks=[webhook(receiver, secret_file, ["hits"])])
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump(config))
    code = (
        "import threading; from anpr.config import load_config; from anpr.notify import run_notifiers; "
        f"run_notifiers(load_config({str(path)!r}), threading.Event())"
    )
    with (tmp_path / "child.log").open("wb") as out:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any(q.status == 503 for q in receiver.requests), "the child to be mid-stream", 30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert sorted(receiver.delivered_ids()) == sorted(first_two)
    assert pending(client, keys.hits, "notify-ops") == 3  # read, not acked: the kill lost nothing

    receiver.answer = lambda _id: (200, {})
    cfg = load_config(path)
    sink = WebhookSink(cfg.notify.webhooks[0])
    try:
        Notifier(cfg, connect(cfg.redis), sink, "hits").run(burst=True)
    finally:
        sink.close()
    ids = receiver.delivered_ids()
    assert set(ids) == {h.hit_id for h in hits}
    assert sorted(ids[:2]) == sorted(first_two)  # acknowledged ones are not sent again
    assert ids[2:] == [h.hit_id for h in hits[2:]]  # the rest in stream order
    assert pending(client, keys.hits, "notify-ops") == 0
    assert stats(client, keys, "notify-ops")["sent"] == 5


# -- configuration --------------------------------------------------------------------------------


def test_nothing_enabled_or_a_bad_secret_fails_fast(keys: Keys, tmp_path: Path, receiver: Receiver) -> None:
    with pytest.raises(ConfigError, match=r"notify\.mqtt\.enabled"):
        run_notifiers(make_cfg(keys), threading.Event(), burst=True)
    with pytest.raises(ConfigError, match=r"notify\.webhooks\[ops\]\.secret_file.*cannot read"):
        run_notifiers(make_cfg(keys, webhooks=[webhook(receiver, tmp_path / "missing")]), threading.Event(), True)
    blank = tmp_path / "blank"
    blank.write_text(" \n")
    with pytest.raises(ConfigError, match=r"secret_file.*is empty"):
        run_notifiers(make_cfg(keys, webhooks=[webhook(receiver, blank)]), threading.Event(), True)
