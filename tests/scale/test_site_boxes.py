"""A crossing over two boxes, each `anpr run` on its own network namespace, Redis behind Sentinel.

Box b1 plays the day clip (lane1, front camera), box b2 the truck's rear clip (lane2): real models, real
processes. The publisher (root namespace) delivers to the reference partner receiver, which keeps its
inbox on the shared Redis under a test prefix (the partner's side). Checked against the clips'
ground truth (sample_videos/*.json): each vehicle one event, each event once in the stream and once at
the partner, whatever dies in between. Two boxes replaying at once load this 2-core machine enough for
the odd single-character misread (CMB093 as OMB093): a vehicle counts as found by an event whose plate
is at most one edit from the truth, paired one to one. What is counted here is loss and duplication;
reading accuracy is measured elsewhere (docs/accuracy.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import netns
import pytest
import redis
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anpr.config import REPO_ROOT
from anpr.exchange.envelope import private_key_pem, public_key_b64
from anpr.keys import Keys
from anpr.plates import edit_distance

if TYPE_CHECKING:
    from conftest import SentinelSite

ANPR = Path(sys.executable).parent / "anpr"
SAMPLES = REPO_ROOT / "sample_videos"
CAMERAS = {  # camera -> (box, clip, lane, approach direction)
    "front": ("b1", "lane_day", "lane1", "entry"),
    "rear": ("b2", "truck_rear", "lane2", "exit"),
}
HEALTH_PORT = 9811  # each box has its own namespace: the same port on every box
SHARED_REDIS = "redis://127.0.0.1:6379/0"


def truth(camera: str) -> list[str]:
    return sorted(e["plate"] for e in json.loads((SAMPLES / f"{CAMERAS[camera][1]}.json").read_text())["events"])


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, redis.RedisError):
            if value := check():
                return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Crossing:
    """Two boxes, a publisher and the partner's receiver on one sentinel site."""

    site: SentinelSite
    tmp: Path
    config: Path
    receiver_prefix: str
    boxes: dict[str, netns.Machine]
    procs: dict[str, subprocess.Popen[bytes]]

    def health(self, box: str) -> dict[str, Any]:
        url = f"http://{self.boxes[box].address}:{HEALTH_PORT}/health"
        return httpx.get(url, timeout=3, trust_env=False).json()  # type: ignore[no-any-return]

    def streaming(self, box: str) -> bool:
        return all(c["state"] == "streaming" for c in self.health(box)["cameras"].values())

    def ended(self, box: str) -> bool:
        return all(c["state"] in ("ended", "stopped") for c in self.health(box)["cameras"].values())

    def events(self) -> list[dict[str, Any]]:
        entries = self.site.client().xrange(Keys(self.site.prefix).events)
        return [json.loads(fields[b"event"]) for _, fields in entries]

    def delivered(self) -> list[str]:
        r = redis.Redis.from_url(SHARED_REDIS)
        try:
            return [f[b"message_id"].decode() for _, f in r.xrange(Keys(self.receiver_prefix).exchange_inbox)]
        finally:
            r.close()

    def kill_box(self, box: str) -> None:
        """Every process of the box at once (SIGKILL to its process group): a box losing power."""
        self.boxes[box].kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))


def settle(read: Callable[[], list[Any]], quiet_s: float, timeout_s: float) -> list[Any]:
    """What `read` returns once it has not changed for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    return last


@pytest.fixture
def crossing(sentinel_site: SentinelSite, tmp_path: Path) -> Iterator[Crossing]:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "signing.pem").write_bytes(private_key_pem(key))
    receiver_port = 18000 + int(uuid.uuid4().int % 2000)
    receiver_prefix = f"t-recv-{uuid.uuid4().hex[:8]}"
    site_cfg = {
        "site": {"name": "testsite", "country": "UA"},
        "redis": sentinel_site.redis_config(),
        "events": {"retry_after_s": 0.5},
        "runtime": {
            "workers": 1,
            "health": {"host": "0.0.0.0", "port": HEALTH_PORT},
            "box_heartbeat_ttl_s": 3.0,
        },
        "cameras": [
            {"name": cam, "source": str(SAMPLES / f"{clip}.mp4"), "lane": lane, "approach_direction": way, "box": box}
            for cam, (box, clip, lane, way) in CAMERAS.items()
        ],
        "publisher": {
            "url": f"http://127.0.0.1:{receiver_port}/v1/messages",
            "signing_key_file": str(tmp_path / "signing.pem"),
            "key_id": "ua-test-1",
            "receiver": "md-customs",
            "sender_site": "testsite",
            "consumer": "pub-1",
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
            "claim_idle_s": 2.0,
            "block_ms": 200,
        },
    }
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site_cfg))
    receiver_config = tmp_path / "partner.yaml"
    receiver_config.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": SHARED_REDIS, "prefix": receiver_prefix},
                "receiver": {
                    "port": receiver_port,
                    "receiver": "md-customs",
                    "trusted_keys": {"ua-test-1": public_key_b64(key)},
                },
            }
        )
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    boxes = {box: sentinel_site.net.add(box) for box, *_ in CAMERAS.values()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANPR_")}
    try:
        with (tmp_path / "receiver.log").open("ab") as out:
            procs["receiver"] = subprocess.Popen(
                [str(ANPR), "exchange-receiver", "--config", str(receiver_config)], stdout=out, stderr=out, env=env
            )
        with (tmp_path / "publisher.log").open("ab") as out:
            procs["publisher"] = subprocess.Popen(
                [str(ANPR), "publisher", "--config", str(config)], stdout=out, stderr=out, env=env
            )
        for box, machine in boxes.items():
            box_env = env | {"ANPR_RUNTIME__BOX": box, "ANPR_EVENTS__SPOOL_DIR": str(tmp_path / f"spool-{box}")}
            procs[box] = machine.popen([str(ANPR), "run", "--config", str(config)], tmp_path / f"{box}.log", box_env)
        yield Crossing(sentinel_site, tmp_path, config, receiver_prefix, boxes, procs)
    finally:
        for name in ("publisher", "receiver"):
            if name in procs and procs[name].poll() is None:
                procs[name].terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[name].wait(timeout=10)
                procs[name].kill()
        for box, machine in boxes.items():
            machine.kill()
            for ring in Path("/dev/shm").glob(f"anpr_{procs[box].pid}_*") if box in procs else ():
                ring.unlink(missing_ok=True)  # a SIGKILLed runtime cannot unlink its frame rings
        r = redis.Redis.from_url(SHARED_REDIS)
        for k in r.scan_iter(f"{receiver_prefix}:*"):
            r.delete(k)
        r.close()


def unmatched(plates: list[str], camera: str) -> tuple[list[str], list[str]]:
    """Ground-truth plates of `camera` without an event, and events without a vehicle: one to one, one
    edit allowed (an OCR misread is not a lost or duplicated event)."""
    missing, extra = [], list(plates)
    for plate in truth(camera):
        near = [p for p in extra if edit_distance(p, plate) <= 1]
        if not near:
            missing.append(plate)
            continue
        extra.remove(min(near, key=lambda p: edit_distance(p, plate)))
    return missing, extra


def by_camera(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    plates: dict[str, list[str]] = {}
    for event in events:
        plates.setdefault(event["camera"], []).append(event["plate"])
    return {camera: sorted(p) for camera, p in plates.items()}


@pytest.mark.slow
def test_primary_dies_mid_replay_every_event_once_in_the_stream_and_at_the_partner(crossing: Crossing) -> None:
    for box in crossing.boxes:
        wait_for(lambda box=box: crossing.streaming(box), 120, f"box {box}'s camera streaming")  # type: ignore[misc]
    assert all(doc["up"] for doc in crossing.health("b1")["site"]["boxes"].values())
    time.sleep(8)  # mid-replay: a few vehicles passed, most still to come
    before = len(crossing.events())
    old = crossing.site.kill_primary()
    crossing.site.wait_failover(old)
    for box in crossing.boxes:
        wait_for(lambda box=box: crossing.ended(box), 90, f"box {box}'s clip to end")  # type: ignore[misc]
    events = settle(crossing.events, quiet_s=6, timeout_s=60)

    ids = [e["event_id"] for e in events]
    assert [i for i, n in Counter(ids).items() if n > 1] == [], "an event is in the stream twice"
    plates = by_camera(events)
    assert {cam: unmatched(plates.get(cam, []), cam) for cam in CAMERAS} == {cam: ([], []) for cam in CAMERAS}, (
        crossing.logs()
    )
    assert len(events) > before, "the primary died after the last event: nothing crossed the failover"
    delivered = settle(crossing.delivered, quiet_s=4, timeout_s=60)
    assert sorted(delivered) == sorted(ids), "the partner did not get every event exactly once"


@pytest.mark.slow
def test_a_dead_box_is_named_and_the_other_box_carries_on(crossing: Crossing) -> None:
    for box in crossing.boxes:
        wait_for(lambda box=box: crossing.streaming(box), 120, f"box {box}'s camera streaming")  # type: ignore[misc]
    wait_for(lambda: "rear" in by_camera(crossing.events()), 30, "box b2's first event")
    assert crossing.site.client().get(Keys(crossing.site.prefix).site_box("b2")) is not None
    crossing.kill_box("b2")
    rear_before = by_camera(crossing.events())["rear"]

    def b2_named_down() -> dict[str, Any] | None:
        doc = crossing.health("b1")
        return doc if not doc["site"]["boxes"]["b2"]["up"] else None

    doc = wait_for(b2_named_down, 15, "box b1's /health to name b2 down")
    assert any(p.startswith("box b2 down") and "rear" in p for p in doc["problems"]), doc["problems"]
    assert doc["site"]["boxes"]["b1"]["up"] and doc["site"]["boxes"]["b1"]["cameras"] == {"front": "streaming"}

    wait_for(lambda: crossing.ended("b1"), 90, "box b1's clip to end")
    events = by_camera(settle(crossing.events, quiet_s=6, timeout_s=60))
    assert unmatched(events["front"], "front") == ([], []), crossing.logs()
    assert events["rear"] == rear_before, "events of a dead box's camera kept coming"
    missing, _ = unmatched(rear_before, "rear")
    assert missing, "box b2 died after its last vehicle: no event of it was left to stop"
