"""Loading still images with errors that say what is wrong with the file.

`cv2.imread` returns None for every kind of failure and happily decodes a truncated JPEG into a
half-grey picture, so we read the bytes ourselves and check the end markers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the reason."""


def decode_image(path: Path) -> np.ndarray:
    """BGR pixels of `path`, or ImageError saying why not."""
    import cv2

    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    data = path.read_bytes()
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); the file was cut short")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk); the file was cut short")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a readable image (supported: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return image


def expand_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """Each given path; folders expand (recursively, sorted) to the images inside.

    A missing path is yielded as is, so the caller reports it in order with the rest.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path
