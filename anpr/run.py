"""`anpr run`: the cameras of a site (or of one box of it, `runtime.box`), live, until SIGINT/SIGTERM.

The parent resolves what all processes must share before any child starts: the Redis URL (an
embedded Redis is started here, once, not by each worker) and the handler factory. The runtime
(anpr.runtime) then supervises camera and worker processes.

A site spread over several boxes runs one `anpr run` per box, all on one Redis (usually behind
Sentinel) and one events stream. Each box keeps a heartbeat key in Redis with its cameras' states; as
every box reads the same site config, each knows the others and its /health names a box whose
heartbeat has expired.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from anpr.config import AnprConfig, CameraConfig
from anpr.events import Spool, SpoolTarget
from anpr.keys import Keys
from anpr.lane import build_lane_handler
from anpr.redis_client import connect
from anpr.runtime.live import Runtime
from anpr.runtime.stages import CameraFeed

log = logging.getLogger(__name__)


def with_shared_redis(cfg: AnprConfig) -> AnprConfig:
    """The config with a concrete Redis URL: the embedded Redis starts in this process if none is set."""
    if cfg.redis.url is not None or cfg.redis.sentinels:
        return cfg
    from anpr.redis_embedded import start_embedded

    url = start_embedded(cfg.redis.data_dir)
    log.info("no Redis URL configured: embedded Redis at %s", url)
    return cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"url": url})})


def box_cameras(cfg: AnprConfig) -> list[CameraConfig]:
    """The cameras this box runs: those labelled `runtime.box`, or all when it is unset."""
    box = cfg.runtime.box
    if box is None:
        return list(cfg.cameras)
    cameras = [c for c in cfg.cameras if c.box == box]
    if not cameras:
        boxes = sorted({c.box for c in cfg.cameras if c.box is not None})
        raise ValueError(f"no camera has box {box!r} (runtime.box); the config's boxes: {boxes or 'none'}")
    return cameras


class BoxHeartbeat:
    """Writes this box's heartbeat every third of its TTL (a thread), and reads every box's for /health."""

    def __init__(self, cfg: AnprConfig, client: redis.Redis, states: Callable[[], Mapping[str, str]]) -> None:
        self.box = cfg.runtime.box
        self.ttl_s = cfg.runtime.box_heartbeat_ttl_s
        self.prefix = cfg.redis.prefix
        self.client = client
        self.states = states
        self.site_cameras: dict[str, list[str]] = {}
        for camera in cfg.cameras:
            if camera.box is not None:
                self.site_cameras.setdefault(camera.box, []).append(camera.name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="box-heartbeat", daemon=True)

    def start(self) -> None:
        if self.box is not None:
            self._thread.start()

    def close(self) -> None:
        """Stop writing and remove the heartbeat: a box stopped on purpose is down at once."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        assert self.box is not None
        try:
            self.client.delete(Keys(self.prefix).site_box(self.box))
        except redis.RedisError as exc:
            log.warning(
                "could not remove the heartbeat of box %s (it expires in %.0f s): %s", self.box, self.ttl_s, exc
            )

    def beat(self) -> None:
        assert self.box is not None
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "cameras": dict(self.states())}
        self.client.set(Keys(self.prefix).site_box(self.box), json.dumps(doc), px=int(self.ttl_s * 1000))

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
                if failing:
                    log.info("box heartbeat written again")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("box heartbeat not written (retried): %s", exc)
                failing = True
            if self._stop.wait(self.ttl_s / 3):
                return

    def site(self) -> dict[str, Any]:
        """Every box of the site config: up (with its cameras' states as it last wrote them) or down."""
        boxes = sorted(self.site_cameras)
        raw = self.client.mget([Keys(self.prefix).site_box(b) for b in boxes]) if boxes else []
        now = time.time()
        doc: dict[str, Any] = {}
        for box, value in zip(boxes, raw, strict=True):
            if value is None:
                doc[box] = {"up": False, "cameras": self.site_cameras[box]}
                continue
            beat = json.loads(value)
            doc[box] = {
                "up": True,
                "host": beat["host"],
                "heartbeat_age_s": round(now - beat["time"], 1),
                "cameras": beat["cameras"],
            }
        return doc


def run_site(cfg: AnprConfig) -> None:
    if not cfg.cameras:
        raise ValueError("no cameras configured: add a `cameras:` list to the config (see configs/site-example.yaml)")
    cameras = box_cameras(cfg)
    cfg = with_shared_redis(cfg)
    client = connect(cfg.redis)
    # Claimed here, before any worker starts: a spool of another destination stops the command at once
    # (SpoolError, one line) instead of crash-looping every worker.
    spool = Spool(cfg.events.spool_dir, cfg.events.spool_max_bytes, target=SpoolTarget.of(cfg.redis))

    def redis_ok() -> bool:
        return bool(client.ping())

    runtime: Runtime | None = None

    def camera_states() -> Mapping[str, str]:
        return {} if runtime is None else runtime.camera_states()

    heartbeat = BoxHeartbeat(cfg, client, camera_states)
    runtime = Runtime(
        cfg.runtime,
        [CameraFeed.live(c, cfg.gate.detect_fps) for c in cameras],
        functools.partial(build_lane_handler, cfg),
        redis_ok=redis_ok,
        spool_depth=lambda: len(spool.files()),
        site=heartbeat.site if heartbeat.site_cameras else None,
    )
    where = f"site {cfg.site.name}" + (f" box {cfg.runtime.box}" if cfg.runtime.box else "")
    log.info("%s: %d cameras, %d workers", where, len(cameras), cfg.runtime.workers)
    heartbeat.start()
    try:
        runtime.run()
    finally:
        heartbeat.close()
