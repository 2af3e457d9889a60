"""plate_ocr's network (models/plate_ocr.py), under the name EasyOCR imports for plate_ocr_seed1:
the same recipe trained with another seed, a second voter (models/plate_ocr.md, Ensemble)."""

from plate_ocr import Model

__all__ = ["Model"]
