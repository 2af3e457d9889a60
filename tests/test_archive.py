"""The archive under faults: killed mid-stream, and its database stopped for 20 s. Nothing lost, nothing twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from history_support import Consumers, anpr, history_config
from support import PostgresServer, make_event, pg_database

from anpr.config import StoreConfig
from anpr.keys import Keys
from anpr.schema import PlateEvent
from anpr.store import EventQuery, EventRecord, Store

pytestmark = pytest.mark.slow

JPEG = b"\xff\xd8\xff\xe0 a small stand-in for a crop \xff\xd9"


def _publish(r: Any, keys: Keys, events: list[PlateEvent], with_crops: bool = True) -> None:
    pipe = r.pipeline()
    for ev in events:
        pipe.xadd(keys.events, {"event": ev.model_dump_json()})
        if with_crops:
            pipe.set(keys.plate_image(ev.event_id), JPEG + ev.plate.encode(), ex=3600)
    pipe.execute()


def _stored(store: Store) -> list[str]:
    return [e.event_id for e in store.iter_events(EventQuery(limit=None))]


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_archive_killed_mid_stream_then_restarted_stores_every_event_once(
    store_url: str | None, tmp_path: Path, redis_prefix: str, client: redis.Redis
) -> None:
    cfg = history_config(tmp_path, redis_prefix, store_url, extra={"archive": {"batch_size": 10}})
    keys = Keys(redis_prefix)
    events = [make_event(i) for i in range(3000)]
    _publish(client, keys, events)
    store = Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store"))
    with Consumers(cfg, which=()) as consumers:
        consumers.start("archive")
        _wait_for(lambda: len(_stored(store)) >= 300, 60, "300 events stored")
        consumers.kill("archive")
    partial = len(_stored(store))
    assert partial < len(events), "the archive finished before it was killed: the test proves nothing"

    done = anpr("archive", "--burst", config=cfg)
    assert done.returncode == 0, done.stderr
    stored = _stored(store)
    assert sorted(stored) == sorted(e.event_id for e in events)  # each once: ids are the primary key
    assert client.xpending(keys.events, "archive")["pending"] == 0
    one = store.get_event(events[1234].event_id)
    assert one is not None and one.plate_image is not None
    assert (tmp_path / "store" / one.plate_image).read_bytes() == JPEG + events[1234].plate.encode()
    store.close()


def test_archive_waits_out_a_20_s_database_outage_and_loses_nothing(tmp_path: Path, redis_prefix: str) -> None:
    server = PostgresServer()
    server.start()
    try:
        with pg_database(server.admin_url) as url:
            _outage(tmp_path, redis_prefix, url, server)
    finally:
        server.close()


def _outage(tmp_path: Path, prefix: str, url: str, server: PostgresServer) -> None:
    cfg = history_config(tmp_path, prefix, url, extra={"archive": {"batch_size": 20}})
    keys = Keys(prefix)
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    store = Store.from_config(StoreConfig(url=url, data_dir=tmp_path / "store"))
    written: list[PlateEvent] = []
    stop = threading.Event()

    def traffic() -> None:  # 50 events/s for the whole test, outage included
        i = 0
        while not stop.is_set():
            batch = [make_event(i + k) for k in range(5)]
            _publish(r, keys, batch)
            written.extend(batch)
            i += 5
            stop.wait(0.1)

    writer = threading.Thread(target=traffic)
    with Consumers(cfg, which=("archive",)) as consumers:
        writer.start()
        try:
            _wait_for(lambda: len(_stored(store)) >= 100, 60, "100 events stored before the outage")
            server.stop()
            time.sleep(20)
            assert consumers.alive(), consumers.log("archive")[-2000:]
            server.start()
            time.sleep(3)
        finally:
            stop.set()
            writer.join()
        _wait_for(lambda: len(_stored(store)) >= len(written), 60, "every event stored after the outage")
        time.sleep(1)
    stored = _stored(store)
    assert sorted(stored) == sorted(e.event_id for e in written)
    assert int(r.hget(keys.consumer_stats("archive-events"), "stored") or 0) == len(written)
    assert r.xpending(keys.events, "archive")["pending"] == 0
    assert "store unavailable" in consumers.log("archive")
    store.close()
    r.close()


def test_retention_job_deletes_old_records_and_counts_them_in_its_metrics(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from prometheus_client import REGISTRY

    from anpr.archive import enforce_retention
    from anpr.config import AnprConfig

    cfg = AnprConfig(store={"data_dir": tmp_path / "store", "retention": {"events_days": 30, "crops_days": 7}})
    store = Store.from_config(cfg.store)
    now = datetime.now(UTC)
    old, recent = make_event(1, first_seen=now - timedelta(days=40)), make_event(2, first_seen=now - timedelta(days=10))
    store.save_events([EventRecord(old, JPEG + b"1"), EventRecord(recent, JPEG + b"2")])

    def deleted(kind: str) -> float:
        return REGISTRY.get_sample_value("anpr_retention_deleted_total", {"kind": kind}) or 0.0

    before = {k: deleted(k) for k in ("events", "crops")}
    counts = enforce_retention(store, cfg)
    assert (counts["events"], counts["crops"]) == (1, 2)
    assert {k: deleted(k) - before[k] for k in before} == {"events": 1.0, "crops": 2.0}
    assert REGISTRY.get_sample_value("anpr_retention_last_run_timestamp_seconds") == pytest.approx(
        now.timestamp(), abs=60
    )
    kept = store.get_event(recent.event_id)
    assert store.get_event(old.event_id) is None and kept is not None and kept.plate_image is None
    store.close()
