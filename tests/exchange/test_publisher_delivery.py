"""The publisher against a real Redis and a real receiver on loopback: delivery, dead letters, recovery."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from anpr.config import AnprConfig
from anpr.exchange.publisher import Publisher, check
from anpr.exchange.transport import HttpTransport, Transport
from anpr.redis_client import connect
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ProcessReceiver, ThreadReceiver

    EventFactory = Callable[..., PlateEvent]


def publisher(ex: Exchange, cfg: AnprConfig, transport: Transport | None = None) -> Publisher:
    return Publisher(cfg, connect(cfg.redis), transport or HttpTransport(cfg.publisher), ex.signer())


def stats(ex: Exchange) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in ex.r.hgetall(ex.keys.publisher_stats).items()}


def dead_letters(ex: Exchange) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in ex.r.xrange(ex.keys.exchange_dead)]


def pending(ex: Exchange, group: str = "exchange-publisher") -> int:
    return int(ex.r.xpending(ex.keys.events, group)["pending"])


def test_burst_delivers_every_event_once(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg = exchange.config(publisher={"batch_size": 40})
    events = [event_factory(i) for i in range(130)]
    exchange.add_events(events)
    with thread_receiver(cfg):
        pub = publisher(exchange, cfg)
        pub.run(burst=True)
        pub.close()
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    assert pending(exchange) == 0
    assert stats(exchange) == {"delivered": 130}
    assert pub.requests == 4  # batches of 40: batching works
    healthy, report = check(cfg)
    assert healthy
    assert report["lag"] == 0 and report["pending"] == 0 and report["totals"]["delivered"] == 130
    # The stored payload is the envelope, addressed and attributed as configured.
    _, fields = exchange.r.xrange(exchange.keys.exchange_inbox, count=1)[0]
    envelope = json.loads(fields[b"payload"])
    assert envelope["sender"] == {"site": "ua-porubne", "country": "UA"}
    assert envelope["receiver"] == "md-customs"
    assert envelope["message_id"] == envelope["event"]["event_id"] == events[0].event_id


def test_malformed_entries_are_dead_lettered_and_the_rest_delivered(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg = exchange.config()
    good = [event_factory(i) for i in range(3)]
    bad_event = json.loads(good[0].model_dump_json()) | {"plate": "not a plate!"}
    stream = exchange.keys.events
    exchange.add_events(good[:1])
    exchange.r.xadd(stream, {"something": "else"})
    exchange.r.xadd(stream, {"event": "{not json"})
    exchange.r.xadd(stream, {"event": json.dumps(bad_event)})
    exchange.add_events(good[1:])
    with thread_receiver(cfg):
        publisher(exchange, cfg).run(burst=True)
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in good)
    reasons = [d["reason"] for d in dead_letters(exchange)]
    assert reasons[0] == "malformed entry: no 'event' field"
    assert reasons[1].startswith("malformed entry: not a PlateEvent") and "json" in reasons[1].lower()
    assert reasons[2].startswith("malformed entry: not a PlateEvent") and "plate" in reasons[2]
    assert json.loads(dead_letters(exchange)[0]["fields"]) == {"something": "else"}
    assert all(d["source_stream"] == stream for d in dead_letters(exchange))
    assert pending(exchange) == 0
    assert stats(exchange) == {"delivered": 3, "dead_lettered": 3}


def test_message_the_partner_refuses_is_dead_lettered_alone(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    # The partner accepts bodies up to 64 KiB; one event carries a 100 KB crop inline: that request
    # gets 413, the publisher retries its messages one by one and only the big one is refused.
    cfg = exchange.config(publisher={"plate_image": "inline"}, receiver={"max_body_bytes": 64 * 1024})
    events = [event_factory(i).model_copy(update={"plate_image": "crop"}) for i in range(5)]
    for i, ev in enumerate(events):
        exchange.r.set(exchange.keys.plate_image(ev.event_id), (b"\xff" * 100_000) if i == 2 else b"jpeg%d" % i)
    exchange.add_events(events)
    with thread_receiver(cfg):
        publisher(exchange, cfg).run(burst=True)
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for i, e in enumerate(events) if i != 2)
    [dead] = dead_letters(exchange)
    assert dead["reason"].startswith("partner refused: HTTP 413") and "too_large" in dead["reason"]
    assert json.loads(dead["fields"])["event"]["event_id"] == events[2].event_id
    stored = {
        f[b"message_id"].decode(): json.loads(f[b"payload"]) for _, f in exchange.r.xrange(exchange.keys.exchange_inbox)
    }
    assert base64.b64decode(stored[events[0].event_id]["plate_image"]["data"]) == b"jpeg0"
    assert pending(exchange) == 0


def test_restart_redelivers_own_pending_and_claims_a_dead_consumers(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg = exchange.config(publisher={"claim_idle_s": 0.2, "batch_size": 10})
    events = [event_factory(i) for i in range(30)]
    exchange.add_events(events)
    group, stream = cfg.publisher.group, exchange.keys.events
    exchange.r.xgroup_create(stream, group, id="0")
    # Two crashed publishers: ours (pub-1, same name as the one we start) and another that never returns.
    exchange.r.xreadgroup(group, "pub-1", {stream: ">"}, count=10)
    exchange.r.xreadgroup(group, "dead-1", {stream: ">"}, count=10)
    time.sleep(0.3)
    with thread_receiver(cfg):
        publisher(exchange, cfg).run(burst=True)
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    assert pending(exchange) == 0
    assert stats(exchange) == {"delivered": 30}


def test_entry_that_keeps_killing_the_publisher_is_dead_lettered(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg = exchange.config(publisher={"max_deliveries": 3})
    exchange.add_events([event_factory(0), event_factory(1)])
    group, stream = cfg.publisher.group, exchange.keys.events
    exchange.r.xgroup_create(stream, group, id="0")
    first_id = exchange.r.xreadgroup(group, "pub-1", {stream: ">"}, count=1)[0][1][0][0]
    for _ in range(2):  # three reads so far: each one a publisher that died before acknowledging
        exchange.r.xreadgroup(group, "pub-1", {stream: "0"}, count=1)
    with thread_receiver(cfg):
        publisher(exchange, cfg).run(burst=True)
    [dead] = dead_letters(exchange)
    assert dead["source_id"] == first_id.decode()
    assert dead["reason"] == "poison: read 4 times without being delivered"
    assert exchange.inbox_ids() == [event_factory(1).event_id]
    assert pending(exchange) == 0


@pytest.mark.slow
def test_retries_429_and_5xx_honouring_retry_after(
    exchange: Exchange, process_receiver: Callable[..., ProcessReceiver], event_factory: EventFactory
) -> None:
    cfg_path = exchange.write_config()
    cfg = exchange.config(publisher={"request_timeout_s": 30.0})  # no timeouts here: exact retry counts
    faults = ["--schedule", "429,429,500,500_after_store", "--retry-after", "0.4"]
    process_receiver(cfg_path, exchange.receiver_port, faults)
    events = [event_factory(i) for i in range(5)]
    exchange.add_events(events)
    started = time.monotonic()
    publisher(exchange, cfg).run(burst=True)
    took = time.monotonic() - started
    assert took >= 0.8  # two Retry-After: 0.4 honoured
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    assert stats(exchange) == {"delivered": 5, "retried": 20}
    receiver_stats = {k.decode(): int(v) for k, v in exchange.r.hgetall(exchange.keys.receiver_stats).items()}
    assert receiver_stats == {"stored": 5, "duplicate": 5}  # the batch stored behind the lost 2xx


@pytest.mark.slow
def test_check_command_reports_health(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg_path = exchange.write_config()
    command = [sys.executable, "-m", "anpr.exchange", "publisher", "--config", str(cfg_path)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=60)

    assert run("--check").returncode == 1  # no publisher has ever reported
    exchange.add_events([event_factory(i) for i in range(3)])
    with thread_receiver(exchange.config()):
        assert run("--burst").returncode == 0
    result = run("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["health"]["process"]["delivered"] == 3
    assert report["totals"] == {"delivered": 3} and report["lag"] == 0


def test_message_too_big_to_send_is_dead_lettered_without_sending(
    exchange: Exchange, thread_receiver: Callable[[AnprConfig], ThreadReceiver], event_factory: EventFactory
) -> None:
    cfg = exchange.config(publisher={"plate_image": "inline", "max_request_bytes": 16 * 1024})
    big, small = (event_factory(i).model_copy(update={"plate_image": "crop"}) for i in range(2))
    exchange.r.set(exchange.keys.plate_image(big.event_id), b"\xff" * 20_000)
    exchange.add_events([big, small])
    with thread_receiver(cfg):
        pub = publisher(exchange, cfg)
        pub.run(burst=True)
    [dead] = dead_letters(exchange)
    assert "exceeds publisher.max_request_bytes=16384" in dead["reason"]
    assert exchange.inbox_ids() == [small.event_id]
    assert pub.requests == 1
