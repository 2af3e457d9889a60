"""`anpr run` as an operator starts it: live cameras, worker processes, health, clean SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from anpr.config import REPO_ROOT
from anpr.keys import Keys

ANPR = Path(sys.executable).parent / "anpr"
CLIP = REPO_ROOT / "sample_videos" / "truck_front.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.slow
def test_run_serves_health_writes_events_and_stops_on_sigterm(
    tmp_path: Path, redis_prefix: str, redis_client: Any
) -> None:
    port = _free_port()
    config = tmp_path / "site.yaml"
    # A recording as a live source plays at its own speed, like a camera, then ends.
    config.write_text(
        f"site: {{name: testsite, country: UA}}\n"
        f"redis: {{url: 'redis://127.0.0.1:6379/0', prefix: {redis_prefix}}}\n"
        f"events: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
        f"runtime: {{workers: 1, health: {{port: {port}}}}}\n"
        f"cameras:\n  - {{name: gate, source: '{CLIP}', lane: lane1, approach_direction: entry}}\n"
    )
    proc = subprocess.Popen([str(ANPR), "run", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:

        def health() -> dict[str, Any] | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()  # type: ignore[no-any-return]
            except httpx.HTTPError:
                return None

        doc = _wait_for(health, 60, "the health endpoint")
        assert "gate" in json.dumps(doc)
        stream = Keys(redis_prefix).events
        _wait_for(lambda: redis_client.xlen(stream) > 0, 90, "a plate event in the stream")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "anpr_frames_total" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    events = [json.loads(f[b"event"]) for _, f in redis_client.xrange(stream)]
    assert all(e["site"] == "testsite" and e["camera"] == "gate" for e in events), stderr[-3000:]
    assert len({e["event_id"] for e in events}) == len(events)
