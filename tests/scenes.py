"""Synthetic test photos from our own generator (tests never need shared/datasets)."""

from __future__ import annotations

import numpy as np

from anpr.synth.augment import dirt
from anpr.synth.render import render_plate
from anpr.synth.scene import SceneImage, render_scene


def scene(text: str, style: str, seed: int) -> SceneImage:
    """A car at the booth wearing the plate `text` (as printed), deterministic per seed."""
    rng = np.random.default_rng(seed)
    plate = render_plate(text, style, rng, augmentations=[lambda p, r: dirt(p, r, amount=0.2)])
    return render_scene(plate, rng)
