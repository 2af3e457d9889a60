"""`anpr run`-style process: serves health while running; SIGTERM drains and exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from runtime_fakes import Frames, shm_segments, wait_for

SCRIPT = Path(__file__).with_name("fake_pipeline.py")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("to_group", [False, True], ids=["SIGTERM-to-parent", "Ctrl-C-to-group"])
def test_signal_drains_children_and_exits_cleanly(tmp_path: Path, to_group: bool) -> None:
    """SIGTERM as systemd or docker send it; SIGINT to the whole process group as Ctrl-C does."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so Ctrl-C can be imitated without hitting pytest
    )
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            def healthy() -> bool:
                doc = client.get("/health").json()
                return doc["status"] == "ok" and all((w["frames"] or 0) > 0 for w in doc["workers"].values())

            wait_for(healthy, 30, "status ok with frames handled by both workers")
            doc = client.get("/health").json()
            assert client.get("/metrics").text.count('anpr_process_up{name="') == 4
        pids = {name: p["pid"] for name, p in doc["workers"].items()}
        pids |= {name: c["process"]["pid"] for name, c in doc["cameras"].items()}
        for name in ("0", "cam0"):
            title = Path(f"/proc/{pids[name]}/cmdline").read_bytes().split(b"\0")[0].decode()
            assert title == ("anpr: worker 0" if name == "0" else "anpr: camera cam0")

        started = time.monotonic()
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 5.0, f"shutdown took {took:.1f} s: children were killed at the drain timeout?\n{err}"
    assert out.strip().endswith("clean exit")
    assert "killing" not in err and "leaked" not in err, err  # no straggler, no shm the tracker had to clean
    frames = Frames.read(tmp_path / "frames.log")
    assert frames.closed_pids == {pids["0"], pids["1"]}  # both workers drained and closed their handler
    assert frames.bad == 0
    assert not [pid for pid in pids.values() if _alive(pid)]
    assert not shm_segments(proc.pid)
