"""Synthetic plates, scenes and lane clips with exact ground truth, for tests and sample media.

Nothing in the live pipeline imports this package; it depends on OpenCV, Pillow and system fonts
only (no models). Entry points: `render_plate` and `random_plate_text` (render.py), the seeded
degradations in augment.py, and `render_scene` (scene.py) for a whole photo with the plate's box.
"""

from anpr.synth.render import STYLES, PlateStyle, RenderedPlate, random_plate_text, render_plate
from anpr.synth.scene import SceneImage, render_scene

__all__ = ["STYLES", "PlateStyle", "RenderedPlate", "SceneImage", "random_plate_text", "render_plate", "render_scene"]
