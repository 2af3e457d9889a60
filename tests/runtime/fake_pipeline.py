"""The runtime as `anpr run` would run it, with fake cameras and a recording handler.

Run by test_runtime_shutdown.py as a subprocess: prints {"port": ...} once started, then runs
until SIGINT/SIGTERM, and prints "clean exit" after a drained shutdown.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import partial
from pathlib import Path

from runtime_fakes import FakeFeed, RecordingHandler


def main(out_dir: Path) -> None:
    # Imported here, not at the top: every spawned child re-imports this file as __mp_main__,
    # and only needs runtime_fakes from it.
    from anpr.config import HealthConfig, RuntimeConfig
    from anpr.runtime.live import Runtime, stop_on_signals
    from anpr.runtime.stages import CameraFeed

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(processName)s %(name)s: %(message)s")
    cfg = RuntimeConfig(
        workers=2,
        stats_interval_s=0.1,
        drain_timeout_s=5.0,
        max_frame_height=48,
        max_frame_width=64,
        health=HealthConfig(port=0),
    )
    cameras = [CameraFeed(name, partial(FakeFeed, name, 25.0)) for name in ("cam0", "cam1")]
    handler = partial(RecordingHandler, out_dir / "frames.log", delay_s=0.01)
    runtime = Runtime(cfg, cameras, handler, redis_ok=lambda: True, spool_depth=lambda: 0)
    with stop_on_signals(runtime.stop), runtime:
        print(json.dumps({"port": runtime.health_port}), flush=True)
        runtime.supervise()
    print("clean exit", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
