"""Fixtures for the capture tests: clips made here from synthetic frames, and real RTSP servers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from capture_support import SYSTEM_PYTHON, RtspServer, free_port, garble_packet, write_clip

RTSP_PACKAGES = (
    "python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips shared by the session: 100 frames as mp4, 250 as raw H.264 (a 10 s camera loop), and
    that loop with frame 60 (a P-frame) undecodable."""
    folder = tmp_path_factory.mktemp("clips")
    write_clip(folder / "clip.mp4", 100)
    write_clip(folder / "clip.h264", 250)
    garble_packet(folder / "clip.h264", folder / "damaged.h264", index=60)
    return folder


@pytest.fixture(scope="session")
def gst_rtsp_server() -> None:
    """Skip (only) where GStreamer's RTSP server bindings are missing; CI installs them.

    Set ANPR_REQUIRE_RTSP=1 to turn that skip into a failure, so CI can never pass by skipping.
    """
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
        missing = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1] if result.returncode else ""
    except FileNotFoundError:
        missing = f"{SYSTEM_PYTHON} not found"
    if missing:
        reason = f"GStreamer RTSP server typelib missing ({missing}); apt-get install {RTSP_PACKAGES}"
        if os.environ.get("ANPR_REQUIRE_RTSP"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(gst_rtsp_server: None, clips: Path, tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    """Start a real RTSP camera on a free port looping `clip` from `clips`; call once per camera.
    All are killed at teardown."""
    servers: list[RtspServer] = []

    def start(clip: str = "clip.h264") -> RtspServer:
        server = RtspServer(clips / clip, free_port(), tmp_path / f"rtsp-{len(servers)}.log")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()
