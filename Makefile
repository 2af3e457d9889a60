# The two commands of the README quick start. Each does its own idempotent setup first.
.PHONY: demo test setup

setup:
	bash scripts/setup.sh

# Main job: replay a sample lane recording end to end (capture, detector, OCR, tracker, events into
# an embedded Redis in data/redis) and print one event per vehicle.
demo: setup
	.venv/bin/anpr replay --config configs/dev.yaml sample_videos/lane_day.mp4

# Every test, slow ones included (they are marked, not skipped).
test: setup
	.venv/bin/python -m pytest
