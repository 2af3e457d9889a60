"""Redis Sentinel: anpr's client follows a failover, and events written across it land exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import make_event

from anpr.config import EventsConfig, RedisConfig
from anpr.events import EventSink, Outcome
from anpr.keys import Keys
from anpr.redis_client import connect

if TYPE_CHECKING:
    from conftest import SentinelSite


@pytest.mark.slow
def test_a_writer_rides_out_the_primary_dying(sentinel_site: SentinelSite, tmp_path: Path) -> None:
    cfg = RedisConfig(**sentinel_site.redis_config())  # type: ignore[arg-type]
    client = connect(cfg)
    sink = EventSink(client, Keys(cfg.prefix), EventsConfig(spool_dir=tmp_path / "spool", retry_after_s=0.2))
    events = [make_event(i) for i in range(300)]
    outcomes: list[Outcome] = []
    old = ""

    def kill_later() -> None:
        nonlocal old
        time.sleep(1.0)
        old = sentinel_site.kill_primary()

    killer = threading.Thread(target=kill_later)
    killer.start()
    for event in events:  # ~6 s of steady writes: before, during and after the failover
        outcomes.append(sink.publish(event))
        time.sleep(0.02)
    killer.join()
    new = sentinel_site.wait_failover(old)
    assert new != old
    deadline = time.monotonic() + 20
    while not sink.drain() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sink.spool.files(), "spooled events not written after the failover"
    assert Outcome.SPOOLED in outcomes, "the outage was never seen: the test did not kill the primary mid-write"

    stored = [e for _, e in sentinel_site.client().xrange(Keys(cfg.prefix).events)]
    ids = [f[b"event"] for f in stored]
    written = sorted(make_event(i).event_id for i in range(300))
    from anpr.schema import PlateEvent

    assert sorted(PlateEvent.model_validate_json(raw).event_id for raw in ids) == written
    # The client itself moved: a plain command through it reaches the new primary.
    assert client.set(f"{cfg.prefix}:probe", b"1")
    host = client.connection_pool.get_master_address()  # type: ignore[attr-defined]
    assert f"{host[0]}:{host[1]}" == new
