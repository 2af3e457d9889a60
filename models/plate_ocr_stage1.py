"""plate_ocr's network (models/plate_ocr.py), under the name EasyOCR imports for plate_ocr_stage1:
the 32 px network plate_ocr is fine-tuned from (models/plate_ocr.md, Recipe)."""

from plate_ocr import Model

__all__ = ["Model"]
