"""A per-camera ring of frames in shared memory: pixels stay put, processes pass FrameRefs.

One camera process writes, one worker process reads. The ring has `slots` fixed-size slots of
max_height x max_width x 3 bytes, each with a small header guarded seqlock-style: the writer
makes the slot's version odd, writes header and pixels, then makes it even again. The reader
copies the pixels out and accepts them only if the version was even and unchanged across the
copy and the header still names the frame it was sent (camera seq and capture time). Anything
else means the writer lapped the reader: `read` returns None and the caller counts a drop.
Neither side ever waits for the other, so a slow worker can never stall a camera.

Python has no memory fences; the protocol relies on stores becoming visible in program order,
which x86-64 guarantees and which the interpreter's own atomics between the steps give on ARM in
practice. The header identity check is a second guard that needs no ordering at all.

The supervisor creates (and finally unlinks) every ring before starting any child, so a camera
or worker that crashes and restarts attaches to the same segment and nothing leaks in /dev/shm.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Self

import numpy as np

from anpr.schema import Frame, FrameRef

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# One record per slot. `version` is the seqlock counter: odd while the writer is inside the slot.
_HEADER = np.dtype([("version", "<u8"), ("seq", "<i8"), ("ts_us", "<i8"), ("height", "<u4"), ("width", "<u4")])
_ALIGN = 64  # pixel data starts on a cache line


@dataclass(frozen=True, slots=True)
class RingSpec:
    """How to find and lay out one camera's ring; picklable, handed to both processes."""

    camera: str
    shm_name: str
    slots: int
    max_height: int
    max_width: int

    @property
    def slot_bytes(self) -> int:
        return self.max_height * self.max_width * 3

    @property
    def data_offset(self) -> int:
        header_bytes = self.slots * _HEADER.itemsize
        return -(-header_bytes // _ALIGN) * _ALIGN

    @property
    def total_bytes(self) -> int:
        return self.data_offset + self.slots * self.slot_bytes


def check_shm_space(rings_bytes: int, shm_dir: Path = Path("/dev/shm")) -> None:
    """Refuse to start rings that /dev/shm cannot hold.

    Creating them would still succeed (the segments are sparse), and the first write past the
    free space would kill the camera process with SIGBUS, over and over. Docker's default
    /dev/shm is 64 MiB: two 1080p cameras with 6 slots already need 71 MiB.
    """
    if not shm_dir.is_dir():
        return  # not Linux: the OS backs shared memory elsewhere
    free = shutil.disk_usage(shm_dir).free
    if rings_bytes > free:
        raise RuntimeError(
            f"frame rings need {rings_bytes / 2**20:.0f} MiB of {shm_dir}, {free / 2**20:.0f} MiB free: lower "
            "runtime.ring_slots or max_frame_width/height, or enlarge it (docker: --shm-size)"
        )


def _micros(ts: datetime) -> int:
    """Capture time as integer microseconds since the epoch: exact, unlike a float timestamp."""
    return (ts - _EPOCH) // _MICROSECOND


class FrameRing:
    """One attachment to a camera's ring: `write` in the camera process, `read` in the worker."""

    def __init__(self, spec: RingSpec, shm: SharedMemory, owner: bool) -> None:
        self.spec = spec
        self._shm = shm
        self._owner = owner
        self._headers = np.ndarray((spec.slots,), dtype=_HEADER, buffer=shm.buf)
        self._pixels = np.ndarray(
            (spec.slots, spec.slot_bytes), dtype=np.uint8, buffer=shm.buf, offset=spec.data_offset
        )
        self._next_slot = 0
        self._closed = False

    @classmethod
    def create(cls, camera: str, slots: int, max_height: int, max_width: int) -> Self:
        """Allocate a new zeroed ring (the supervisor does this); the caller must `unlink` it."""
        # pid + random: unique across concurrent runs, and recognisable in /dev/shm when hunting leaks
        name = f"anpr_{os.getpid()}_{secrets.token_hex(4)}"
        spec = RingSpec(camera, name, slots, max_height, max_width)
        shm = SharedMemory(name=name, create=True, size=spec.total_bytes)
        return cls(spec, shm, owner=True)

    @classmethod
    def attach(cls, spec: RingSpec) -> Self:
        """Open an existing ring by name, from a camera or worker process."""
        return cls(spec, SharedMemory(name=spec.shm_name), owner=False)

    def write(self, frame: Frame) -> FrameRef:
        """Copy `frame` into the next slot and return the ref to send; never waits for readers."""
        image = frame.image
        spec = self.spec
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"camera {spec.camera}: expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if height > spec.max_height or width > spec.max_width:
            raise ValueError(
                f"camera {spec.camera}: frame {width}x{height} exceeds the ring's {spec.max_width}x"
                f"{spec.max_height}; raise runtime.max_frame_width/max_frame_height"
            )
        slot = self._next_slot
        self._next_slot = (slot + 1) % spec.slots
        ts_us = _micros(frame.ts)
        headers = self._headers
        # `| 1` rather than `+ 1`: a writer that died mid-write left the version odd already.
        writing = int(headers["version"][slot]) | 1
        headers["version"][slot] = writing
        headers["seq"][slot] = frame.seq
        headers["ts_us"][slot] = ts_us
        headers["height"][slot] = height
        headers["width"][slot] = width
        np.copyto(self._pixels[slot, : height * width * 3].reshape(height, width, 3), image)
        headers["version"][slot] = writing + 1
        return FrameRef(spec.camera, slot, frame.seq, frame.ts, height, width)

    def read(self, ref: FrameRef) -> np.ndarray | None:
        """A private copy of the frame `ref` points at, or None if the writer overwrote it meanwhile."""
        slot = ref.slot
        version = int(self._headers["version"][slot])
        if version & 1 or not self._holds(slot, ref):
            return None
        size = ref.height * ref.width * 3
        image = self._pixels[slot, :size].reshape(ref.height, ref.width, 3).copy()
        if int(self._headers["version"][slot]) != version:
            return None
        return image

    def _holds(self, slot: int, ref: FrameRef) -> bool:
        """Whether the slot header still describes the frame `ref` was made for."""
        headers = self._headers
        return (
            int(headers["seq"][slot]) == ref.seq
            and int(headers["ts_us"][slot]) == _micros(ref.ts)
            and int(headers["height"][slot]) == ref.height
            and int(headers["width"][slot]) == ref.width
        )

    def close(self) -> None:
        """Detach this process (idempotent); the segment lives on until the owner unlinks it."""
        if self._closed:
            return
        self._closed = True
        # numpy views hold exported pointers into the mapping: drop them or close() refuses.
        del self._headers, self._pixels
        self._shm.close()

    def unlink(self) -> None:
        """Remove the segment from /dev/shm (owner only); attached processes keep their mapping."""
        if not self._owner:
            raise RuntimeError("only the process that created a ring may unlink it")
        with contextlib.suppress(FileNotFoundError):  # unlinking twice at shutdown is not an error
            self._shm.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if self._owner:
            self.unlink()
