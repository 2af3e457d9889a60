"""Shared-memory frame ring: round trip, overwrite and torn-write detection, no leaked segments."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from pathlib import Path

import numpy as np
import pytest
from runtime_fakes import make_frame, pixel, shm_segments

from anpr.runtime import ring as ring_module
from anpr.runtime.process import SPAWN
from anpr.runtime.ring import FrameRing, RingSpec, check_shm_space
from anpr.schema import Frame, FrameRef


@pytest.fixture
def ring() -> Iterator[FrameRing]:
    before = shm_segments(os.getpid())
    with FrameRing.create("cam1", slots=3, max_height=48, max_width=64) as r:
        yield r
    assert shm_segments(os.getpid()) == before, "ring segment left in /dev/shm"


@pytest.mark.parametrize(
    ("height", "width"),
    [(48, 64), (24, 32), (1, 1), (48, 1)],
    ids=["max", "smaller", "one-pixel", "one-column"],
)
def test_round_trip_any_size_up_to_max(ring: FrameRing, height: int, width: int) -> None:
    frame = make_frame("cam1", 7, height, width)
    ref = ring.write(frame)
    assert (ref.camera, ref.seq, ref.ts, ref.height, ref.width) == ("cam1", 7, frame.ts, height, width)
    image = ring.read(ref)
    assert image is not None and np.array_equal(image, frame.image)


def test_round_trip_of_a_non_contiguous_view(ring: FrameRing) -> None:
    base = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    frame = Frame("cam1", 1, make_frame("cam1", 1).ts, base[::2, ::2])
    image = ring.read(ring.write(frame))
    assert image is not None and np.array_equal(image, base[::2, ::2])


def test_read_gives_a_private_copy(ring: FrameRing) -> None:
    ref = ring.write(make_frame("cam1", 1))
    image = ring.read(ref)
    assert image is not None
    image[:] = 0
    again = ring.read(ref)
    assert again is not None and again.min() == pixel(1)


def test_lapped_slot_reads_none(ring: FrameRing) -> None:
    refs = [ring.write(make_frame("cam1", seq)) for seq in range(4)]  # 3 slots: seq 3 overwrote seq 0
    assert refs[3].slot == refs[0].slot
    assert ring.read(refs[0]) is None
    assert [ring.read(r) is not None for r in refs[1:]] == [True, True, True]


def test_same_seq_after_a_camera_restart_is_not_mistaken(ring: FrameRing) -> None:
    # A restarted camera process counts from 0 again; the capture time tells the frames apart.
    old = ring.write(make_frame("cam1", 0))
    for seq in (1, 2):
        ring.write(make_frame("cam1", seq))
    time.sleep(0.001)
    ring.write(make_frame("cam1", 0))  # slot of `old` again, same seq, later ts
    assert ring.read(old) is None


def test_writer_dying_mid_write_leaves_the_slot_unreadable_until_rewritten(
    ring: FrameRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = ring.write(make_frame("cam1", 0))
    for seq in (1, 2):
        ring.write(make_frame("cam1", seq))

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for the process being killed inside the copy

    with monkeypatch.context() as patch:
        patch.setattr(ring_module.np, "copyto", die)
        with pytest.raises(KeyboardInterrupt):
            ring.write(make_frame("cam1", 3))
    assert ring.read(good) is None  # slot 0 is half-written: refused, even for its old frame
    reader = FrameRing.attach(ring.spec)  # a fresh writer (restarted camera) recovers the slot
    try:
        ref = reader.write(make_frame("cam1", 4))
        assert ref.slot == good.slot
        image = ring.read(ref)
        assert image is not None and image.min() == pixel(4)
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((49, 64, 3), np.uint8, "exceeds"),
        ((48, 65, 3), np.uint8, "exceeds"),
        ((48, 64), np.uint8, "HxWx3"),
        ((48, 64, 3), np.float32, "uint8"),
    ],
    ids=["too-tall", "too-wide", "gray", "float"],
)
def test_unfit_frames_are_refused(ring: FrameRing, shape: tuple[int, ...], dtype: type, message: str) -> None:
    frame = Frame("cam1", 0, make_frame("cam1", 0).ts, np.zeros(shape, dtype))
    with pytest.raises(ValueError, match=message):
        ring.write(frame)


def test_only_the_owner_unlinks_and_close_is_idempotent(ring: FrameRing) -> None:
    other = FrameRing.attach(ring.spec)
    with pytest.raises(RuntimeError, match="only the process that created"):
        other.unlink()
    other.close()
    other.close()


def test_rings_larger_than_free_shm_are_refused(tmp_path: Path) -> None:
    check_shm_space(1024, tmp_path)  # fits
    with pytest.raises(RuntimeError, match=r"frame rings need 1048576 MiB .* --shm-size"):
        check_shm_space(2**40, tmp_path)


def _hammer(spec: RingSpec, refs: Queue[FrameRef], frames: int) -> None:
    """Writer process: frames as fast as possible into a 2-slot ring, every ref sent to the reader."""
    ring = FrameRing.attach(spec)
    for seq in range(frames):
        ref = ring.write(make_frame("cam1", seq, 256, 256))
        refs.put(ref)
    ring.close()


@pytest.mark.slow
def test_concurrent_writer_never_hands_out_a_torn_image() -> None:
    """A reader racing a writer in another process gets whole frames or None, never a mix."""
    frames = 3000
    with FrameRing.create("cam1", slots=2, max_height=256, max_width=256) as ring:
        refs: Queue[FrameRef] = SPAWN.Queue()
        writer = SPAWN.Process(target=_hammer, args=(ring.spec, refs, frames))
        writer.start()
        whole = lapped = 0
        for _ in range(frames):
            ref = refs.get(timeout=30)
            image = ring.read(ref)
            if image is None:
                lapped += 1
            else:
                assert image.min() == image.max() == pixel(ref.seq), f"torn image for seq {ref.seq}"
                whole += 1
        writer.join(10)
        assert writer.exitcode == 0
    assert whole > 0
    assert lapped > 0, "the writer never lapped the reader: the race was not exercised"
