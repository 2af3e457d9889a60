"""End to end: each sample clip, replayed against a real Redis, yields exactly its ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anpr.config import REPO_ROOT, AnprConfig
from anpr.events import EventSink
from anpr.keys import Keys
from anpr.recognize import PlateRecognizer
from anpr.replay import replay
from anpr.schema import utc_now

SAMPLES = REPO_ROOT / "sample_videos"
TRUTHS = sorted(p for p in SAMPLES.glob("*.json") if (p.with_suffix(".mp4")).is_file())


@pytest.mark.slow
@pytest.mark.parametrize("truth_path", TRUTHS, ids=[p.stem for p in TRUTHS])
def test_replay_yields_exactly_the_ground_truth(
    truth_path: Path, config: AnprConfig, recognizer: PlateRecognizer, redis_client: Any
) -> None:
    truth = json.loads(truth_path.read_text())
    sink = EventSink.from_config(config.redis, config.events)
    result = replay(truth_path.with_suffix(".mp4"), config, recognizer, sink, camera=truth["camera"])

    got = sorted((e.plate, e.direction.value) for e in result.events)
    want = sorted((e["plate"], e["direction"]) for e in truth["events"])
    assert got == want

    stored = [json.loads(f[b"event"]) for _, f in redis_client.xrange(Keys(config.redis.prefix).events)]
    assert sorted(e["event_id"] for e in stored) == sorted(e.event_id for e in result.events), "each event once"
    for event in stored:
        assert redis_client.exists(event["plate_image"]), "best plate crop stored with the event"
    assert sink.stats.refused == 0 and not sink.spool.files()


@pytest.mark.slow
def test_trailer_linked_across_the_lane_cameras(
    config: AnprConfig, recognizer: PlateRecognizer, redis_client: Any
) -> None:
    """truck_front and truck_rear are one lane's front and rear cameras, in sync: the rear camera's
    trailer plate gets the event id of the tractor's front plate, read by the other camera."""
    start = utc_now()  # one clock for both clips, as for two cameras filming the same minute
    sink = EventSink.from_config(config.redis, config.events)
    front = replay(SAMPLES / "truck_front.mp4", config, recognizer, sink, camera="front", start_time=start)
    rear = replay(SAMPLES / "truck_rear.mp4", config, recognizer, sink, camera="rear", start_time=start)

    [tractor] = [e for e in front.events if e.plate == "BH0982XA"]
    [trailer] = [e for e in rear.events if e.plate == "BH4315XT"]
    assert trailer.linked_event_id == tractor.event_id
    stored = [json.loads(f[b"event"]) for _, f in redis_client.xrange(Keys(config.redis.prefix).events)]
    assert [e["linked_event_id"] for e in stored if e["plate"] == "BH4315XT"] == [tractor.event_id]
    # The car ANG772 passes both cameras too: its rear plate is its own, not a trailer's.
    assert [e.plate for e in front.events + rear.events if e.linked_event_id] == ["BH4315XT"]


@pytest.mark.slow
def test_no_links_between_cars_of_one_camera(config: AnprConfig, recognizer: PlateRecognizer) -> None:
    """Cars queueing bumper to bumper on lane_day (BH2741KX right behind OKA417) are no truck."""
    sink = EventSink.from_config(config.redis, config.events)
    result = replay(SAMPLES / "lane_day.mp4", config, recognizer, sink, camera="front")
    assert len(result.events) >= 4
    assert [e.plate for e in result.events if e.linked_event_id] == []
