# The two commands of the README quick start. Each does its own idempotent setup first.
.PHONY: demo test setup train-ocr

setup:
	bash scripts/setup.sh

# Main job: replay a sample lane recording end to end (capture, detector, OCR, tracker, events into
# an embedded Redis in data/redis) and print one event per vehicle.
demo: setup
	.venv/bin/anpr replay --config configs/dev.yaml sample_videos/lane_day.mp4

# Every test, slow ones included (they are marked, not skipped).
test: setup
	.venv/bin/python -m pytest

# Rebuild our plate networks (the CCT's second opinion): models/plate_ocr_small.pth (fine-tune of the
# committed small base, ~20 min on 2 cores incl. ~7 rendering) and models/plate_ocr.pth (fine-tune on
# 48 px lines of the committed models/plate_ocr_stage1.pth, ~35-45 min, reusing the small run's renders); needs
# ../shared/datasets, and root for the fonts the plates are drawn in. Bit-reproducible: the script pins
# the CPU kernels (models/plate_ocr.md, Recipe); each resumes from its .cache/ folder if interrupted.
train-ocr: setup
	dpkg -s fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf)
	.venv/bin/python scripts/train_ocr.py --network plate_ocr_small --init models/plate_ocr_base.pth \
		--epochs 6 --lr 3e-4 --work .cache/ocr_small --renders .cache/ocr_train --export
	.venv/bin/python scripts/train_ocr.py --init models/plate_ocr_stage1.pth --epochs 3 --lr 3e-4 --work .cache/ocr_hd \
		--renders .cache/ocr_train --export
