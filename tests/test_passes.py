"""The lane registry (anpr/passes.py) against the shared Redis: which rear plates link to which front plates."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from support import fast_client, free_port

from anpr.config import AnprConfig, CameraConfig, EventsConfig, GateConfig, SiteConfig, TrackerConfig
from anpr.events import EventSink
from anpr.keys import Keys
from anpr.lane import LaneProcessor
from anpr.passes import PassRegistry
from anpr.recognize import PlateRecognizer
from anpr.schema import Box, Direction, PlateDetection, PlateEvent, PlateRead, Side

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
WINDOW = TrackerConfig().trailer_link_s
FRONT, REAR, UNKNOWN = Side.FRONT, Side.REAR, Side.UNKNOWN
CAR, CAR2, TRUCK, TRAILER, TRAILER2 = "AA1234BB", "BC5678AX", "BH0982XA", "BH4315XT", "KA0001AA"


@dataclass(frozen=True)
class Pass:
    """One emitted pass: its plate, the side its camera saw, in view from `first` to `last` s after T0."""

    plate: str
    side: Side
    first: float
    last: float
    lane: str = "in1"
    direction: Direction = Direction.ENTRY

    def event(self) -> PlateEvent:
        first = T0 + timedelta(seconds=self.first)
        return PlateEvent(
            event_id=PlateEvent.make_id("palanca", self.lane, self.plate, first),
            site="palanca",
            lane=self.lane,
            camera="rear" if self.side is REAR else "front",
            direction=self.direction,
            plate=self.plate,
            confidence=0.9,
            first_seen=first,
            last_seen=T0 + timedelta(seconds=self.last),
            best_seen=first,
            reads=3,
            box=[10, 20, 110, 42],
        )


def registry(client: redis.Redis, keys: Keys) -> PassRegistry:
    return PassRegistry(client, keys, TrackerConfig(), retry_after_s=2.0)


def links(reg: PassRegistry, passes: list[Pass]) -> list[int | None]:
    """Register the passes in order; each one's link as the index of the pass it links to."""
    events = [p.event() for p in passes]
    ids = [e.event_id for e in events]
    linked = [reg.link(e, p.side).linked_event_id for e, p in zip(events, passes, strict=True)]
    return [None if eid is None else ids.index(eid) for eid in linked]


@pytest.mark.parametrize(
    ("passes", "expected"),
    [
        pytest.param([Pass(CAR, FRONT, 0, 4), Pass(CAR, REAR, 9, 12)], [None, None], id="car seen front then rear"),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(CAR, FRONT, 5, 10), Pass(CAR, REAR, 8, 12)],
            [None, None, None],
            id="car's rear plate while its front is still in view: its own, not the truck's trailer",
        ),
        pytest.param(
            [Pass(CAR, FRONT, 0, 4), Pass("AA1234B8", REAR, 9, 12)], [None, None], id="own rear plate, one confusable"
        ),
        pytest.param([Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 14, 18)], [None, 0], id="trailer of the truck"),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 4 + WINDOW, 40)], [None, 0], id="at the end of the window"
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 4.1 + WINDOW, 40)], [None, None], id="after the window"
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 14, 18), Pass(TRAILER2, REAR, 20, 24)],
            [None, 0, None],
            id="two trailers cannot claim one tractor",
        ),
        pytest.param(
            [Pass(CAR2, FRONT, 0, 4), Pass(TRUCK, FRONT, 6, 10), Pass(TRAILER, REAR, 14, 18)],
            [None, None, 1],
            id="the latest front plate is the tractor",
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(CAR, FRONT, 6, 10), Pass(CAR, REAR, 12, 15), Pass(TRAILER, REAR, 16, 20)],
            [None, None, None, 0],
            id="a car seen from behind is no tractor",
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 15), Pass(TRAILER, REAR, 14, 18)], [None, None], id="front still in view: no tractor"
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 14, 18, lane="in2")], [None, None], id="other lane"
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, REAR, 14, 18, direction=Direction.EXIT)],
            [None, None],
            id="other direction",
        ),
        pytest.param(
            [Pass(CAR, REAR, 0, 4), Pass(TRAILER, REAR, 6, 10)], [None, None], id="a rear plate is no tractor"
        ),
        pytest.param(
            [Pass(TRUCK, UNKNOWN, 0, 4), Pass(TRAILER, REAR, 14, 18)], [None, None], id="tractor's side unknown"
        ),
        pytest.param(
            [Pass(TRUCK, FRONT, 0, 4), Pass(TRAILER, UNKNOWN, 14, 18)], [None, None], id="trailer's side unknown"
        ),
    ],
)
def test_links(client: redis.Redis, keys: Keys, passes: list[Pass], expected: list[int | None]) -> None:
    assert links(registry(client, keys), passes) == expected


def test_records_claims_ttl_and_trim(client: redis.Redis, keys: Keys) -> None:
    reg = registry(client, keys)
    truck, trailer = Pass(TRUCK, FRONT, 0, 4).event(), Pass(TRAILER, REAR, 14, 18).event()
    assert reg.link(truck, FRONT) is truck  # nothing to link: the very event goes on
    assert reg.link(trailer, REAR) == trailer.model_copy(update={"linked_event_id": truck.event_id})
    assert reg.link(trailer, REAR).linked_event_id == truck.event_id  # a retried call: same answer
    passes, records = keys.lane_passes("palanca", "in1"), keys.lane_pass_records("palanca", "in1")
    stored: Any = client.hgetall(records)
    assert {k.decode(): json.loads(v) for k, v in stored.items()} == {
        truck.event_id: {
            "plate": TRUCK,
            "direction": "entry",
            "side": "front",
            "last_seen": round(truck.last_seen.timestamp() * 1000),
            "claimed_by": trailer.event_id,
        },
        trailer.event_id: {
            "plate": TRAILER,
            "direction": "entry",
            "side": "rear",
            "last_seen": round(trailer.last_seen.timestamp() * 1000),
            "linked": truck.event_id,
        },
    }
    ttl_s = WINDOW + max(TrackerConfig().max_delay_s, TrackerConfig().direction_wait_s) + 600
    assert 0 < client.pttl(passes) <= ttl_s * 1000 and 0 < client.pttl(records) <= ttl_s * 1000
    # Far later by the events' own clock: the old passes are gone from both keys.
    later = Pass(CAR, FRONT, 3600, 3604).event()
    reg.link(later, FRONT)
    assert client.zrange(passes, 0, -1) == [later.event_id.encode()]
    assert client.hkeys(records) == [later.event_id.encode()]
    assert (reg.stats.recorded, reg.stats.linked, reg.stats.unchecked) == (4, 2, 0)


def test_concurrent_trailers_claim_the_tractor_once(client: redis.Redis, keys: Keys) -> None:
    # Eight workers, each with its own connection, decide eight rear plates at once.
    registry(client, keys).link(Pass(TRUCK, FRONT, 0, 4).event(), FRONT)
    trailers = [Pass(f"KA{i:04d}AA", REAR, 14 + i / 10, 18).event() for i in range(8)]
    start = threading.Barrier(len(trailers))
    linked: list[str | None] = []

    def worker(event: PlateEvent) -> None:
        reg = registry(fast_client(6379), keys)
        start.wait()
        linked.append(reg.link(event, REAR).linked_event_id)

    threads = [threading.Thread(target=worker, args=(e,)) for e in trailers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(linked, key=lambda eid: eid or "") == [None] * 7 + [Pass(TRUCK, FRONT, 0, 4).event().event_id]


def test_unreachable_redis_passes_the_event_on_unlinked(keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    reg = registry(fast_client(free_port()), keys)  # nothing listens there
    trailer = Pass(TRAILER, REAR, 14, 18).event()
    assert reg.link(trailer, REAR) is trailer
    assert reg.link(Pass(TRAILER2, REAR, 20, 24).event(), REAR).linked_event_id is None  # not even tried
    assert (reg.stats.unchecked, reg.stats.redis_errors, reg.stats.recorded) == (2, 1, 0)
    assert trailer.event_id in caplog.text


# -- in the lane: the link is made before the event is published -------------------------------


class ScriptedPlate:
    """Detector and OCR of a scene with one plate, moving down the image (approaching) or up."""

    def __init__(self, text: str, approaching: bool, frames: int) -> None:
        self.text, self.approaching, self.frames = text, approaching, frames
        self.frame = 0

    def detect(self, image: np.ndarray) -> list[PlateDetection]:
        f = self.frame / self.frames if self.approaching else 1 - self.frame / self.frames
        self.frame += 1
        y, width = 200 + 400 * f, 80 + 80 * f
        return [PlateDetection(Box(600 - width / 2, y - width / 9, 600 + width / 2, y + width / 9), 0.9)]

    def read_batch(self, crops: list[np.ndarray]) -> list[PlateRead | None]:
        return [PlateRead(self.text, 0.95, (0.95,) * len(self.text)) for _ in crops]


def drive(
    cfg: AnprConfig, camera: str, plate: ScriptedPlate, start_s: float, sink: EventSink, reg: PassRegistry
) -> None:
    """The plate crosses the camera's view in `plate.frames` frames at 5 fps from `start_s`."""
    cam = next(c for c in cfg.cameras if c.name == camera)
    lane = LaneProcessor(PlateRecognizer(plate, plate, cfg), cam, cfg, sink, reg)
    image = np.zeros((720, 1280, 3), np.uint8)
    for i in range(plate.frames):
        lane.process(T0 + timedelta(seconds=start_s + i / 5), image)
    lane.finish(T0 + timedelta(seconds=start_s + plate.frames / 5 + 2))


@pytest.mark.parametrize("redis_up", [True, False], ids=["linked", "registry unreachable: published unlinked"])
def test_lane_links_the_trailer_before_publishing(
    client: redis.Redis, keys: Keys, tmp_path: Path, redis_up: bool
) -> None:
    cfg = AnprConfig(
        site=SiteConfig(name="palanca"),
        gate=GateConfig(detect_fps=0, motion_threshold=0),
        cameras=[
            CameraConfig(name="front", source="front.mp4", lane="in1", approach_direction="entry"),
            CameraConfig(name="rear", source="rear.mp4", lane="in1", approach_direction="exit"),
        ],
    )
    sink = EventSink(client, keys, EventsConfig(spool_dir=tmp_path / "spool"))
    reg = PassRegistry(client if redis_up else fast_client(free_port()), keys, cfg.tracker, retry_after_s=2.0)
    # Separate processors, as for two worker processes: only Redis joins them.
    drive(cfg, "front", ScriptedPlate(TRUCK, approaching=True, frames=20), 0, sink, reg)
    drive(cfg, "rear", ScriptedPlate(TRAILER, approaching=False, frames=20), 10, sink, reg)

    entries: Any = client.xrange(keys.events)
    truck, trailer = (json.loads(fields[b"event"]) for _, fields in entries)
    assert (truck["plate"], truck["camera"], truck["direction"]) == (TRUCK, "front", "entry")
    assert (trailer["plate"], trailer["camera"], trailer["direction"]) == (TRAILER, "rear", "entry")
    assert truck["linked_event_id"] is None
    assert trailer["linked_event_id"] == (truck["event_id"] if redis_up else None)
    assert reg.stats.unchecked == (0 if redis_up else 2)
