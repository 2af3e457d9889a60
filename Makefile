# The two commands of the README quick start. Each does its own idempotent setup first.
.PHONY: demo test setup

setup:
	bash scripts/setup.sh

# Main job: read the plate of the committed synthetic sample image end to end.
demo: setup
	.venv/bin/anpr read sample_videos/sample_plate.jpg

# Every test, slow ones included (they are marked, not skipped).
test: setup
	.venv/bin/python -m pytest
