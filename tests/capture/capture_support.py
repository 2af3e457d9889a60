"""Helpers for the capture tests: synthetic clips whose frames carry their own index, and a real
RTSP server (tests/rtsp_server.py) as a child process that tests can kill, freeze and restart."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 320, 240, 25
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: GStreamer's Python bindings live there, not in the venv
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "rtsp_server.py"
_BITS, _CELL = 16, 20  # frame index as 16 black/white squares along the top edge


def synthetic_frame(index: int) -> np.ndarray:
    """A frame showing its index twice: as text for a human, as squares that survive H.264."""
    image = np.full((HEIGHT, WIDTH, 3), 60, np.uint8)
    for bit in range(_BITS):
        image[0:_CELL, bit * _CELL : (bit + 1) * _CELL] = 255 if (index >> bit) & 1 else 0
    cv2.putText(image, f"{index:05d}", (60, 150), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 4)
    return image


def frame_index(image: np.ndarray) -> int:
    """The index synthetic_frame() drew into a (decoded) frame."""
    middle = _CELL // 2
    return sum(1 << bit for bit in range(_BITS) if image[middle, bit * _CELL + middle].mean() > 128)


def write_clip(path: Path, frames: int, faststart: bool = False) -> Path:
    """H.264 clip of synthetic frames at FPS: Annex-B for a .h264 path, else by the suffix (mp4...).

    No B-frames and one slice per frame (frame threads, not slice threads), which the RTSP
    server's parse-and-packetise pipeline needs; a keyframe every second.
    """
    options = {"movflags": "faststart"} if faststart else {}
    fmt = "h264" if path.suffix == ".h264" else None
    with av.open(str(path), "w", format=fmt, options=options) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.options = {"bf": "0", "g": str(FPS)}
        stream.codec_context.thread_type = "FRAME"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index), format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def garble_packet(src: Path, dst: Path, index: int) -> Path:
    """Copy of a clip (mp4 or Annex-B) with video packet `index` garbled: one undecodable frame.

    The first 8 bytes (start code or length, NAL header) stay, so the stream still splits into
    the same frames and only this one fails to decode.
    """
    with av.open(str(src)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    pos, size = packets[index].pos, packets[index].size
    data = bytearray(src.read_bytes())
    data[pos + 8 : pos + size] = b"\x55" * (size - 8)
    dst.write_bytes(bytes(data))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll until `condition()` holds; the seconds it took. Fails the test naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def rtsp_answers(port: int, timeout_s: float = 0.5) -> bool:
    """True when an RTSP server on the port replies 200 to OPTIONS (bound and not frozen)."""
    request = f"OPTIONS rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(request)
            return s.recv(64).startswith(b"RTSP/1.0 200")
    except OSError:
        return False


class RtspServer:
    """tests/rtsp_server.py looping `clip` on `port`: a camera to kill, freeze and restart."""

    def __init__(self, clip: Path, port: int, log_path: Path) -> None:
        self.clip, self.port, self.log_path = clip, port, log_path
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--clip", str(self.clip), "--port", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        started = time.monotonic()
        while not rtsp_answers(self.port):
            if self._proc.poll() is not None or time.monotonic() - started > timeout_s:
                self.kill()
                raise RuntimeError(f"RTSP server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """The camera dies: SIGKILL, nothing sent to clients."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a stopped process dies only once continued
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def freeze(self) -> None:
        """The camera hangs: connections stay open, nothing more arrives."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()
