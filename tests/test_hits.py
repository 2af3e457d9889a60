"""The hits matcher: killed mid-stream and restarted, it raises every hit exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from history_support import Consumers, anpr, history_config
from support import make_event

from anpr.config import StoreConfig
from anpr.keys import Keys
from anpr.schema import Hit, MatchMode, WatchlistEntry
from anpr.store import Store

pytestmark = pytest.mark.slow


def test_hits_matcher_killed_mid_stream_then_restarted_raises_each_hit_once(
    store_url: str | None, tmp_path: Path, redis_prefix: str, client: redis.Redis
) -> None:
    cfg = history_config(tmp_path, redis_prefix, store_url, extra={"hits": {"batch_size": 10}})
    keys = Keys(redis_prefix)
    store = Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store"))
    # Every 7th plate is listed exactly; every 11th is listed with letter O for digit 0, confusable-aware.
    events = [make_event(i) for i in range(2500)]
    listed = [
        WatchlistEntry(entry_id=f"e{i}", plate=f"AA{i:04d}BC", mode=MatchMode.EXACT, added_by="t")
        for i in range(0, 2500, 7)
    ] + [
        WatchlistEntry(
            entry_id=f"c{i}", plate=f"AA{i:04d}BC".replace("0", "O"), mode=MatchMode.CONFUSABLE, added_by="t"
        )
        for i in range(0, 2500, 11)
        if "0" in f"{i:04d}"
    ]
    store.add_entries(listed)
    expected = {Hit.make_id(events[int(e.entry_id[1:])].event_id, e.entry_id) for e in listed}
    pipe = client.pipeline()
    for ev in events:
        pipe.xadd(keys.events, {"event": ev.model_dump_json()})
    pipe.execute()

    with Consumers(cfg, which=()) as consumers:
        consumers.start("hits")
        deadline = time.monotonic() + 60
        while client.xlen(keys.hits) < 60:
            assert time.monotonic() < deadline, consumers.log("hits")[-2000:]
            time.sleep(0.05)
        consumers.kill("hits")
    assert client.xlen(keys.hits) < len(expected), "the matcher finished before it was killed: the test proves nothing"

    done = anpr("hits", "run", "--burst", config=cfg)
    assert done.returncode == 0, done.stderr
    raised = [Hit.model_validate_json(f[b"hit"]) for _, f in client.xrange(keys.hits)]
    assert sorted(h.hit_id for h in raised) == sorted(expected)  # each once
    assert {h.matched_as for h in raised if h.entry.entry_id.startswith("c")} == {MatchMode.CONFUSABLE}

    stored = anpr("archive", "--burst", config=cfg)
    assert stored.returncode == 0, stored.stderr
    assert sorted(h.hit.hit_id for h in store.list_hits(limit=10_000)) == sorted(expected)
    store.close()
