"""Reading speed, one table: the current default reader against a baseline revision, in the same run.

    .venv/bin/python scripts/bench_read.py                        # baseline: the last commit before the CCT reader
    .venv/bin/python scripts/bench_read.py --baseline HEAD~3 --photos 40 --crops 300

Rows, for each side (each measured in its own process, on the same machine, one after the other):

- *OCR per crop*: `PlateReader` wall time per crop, one crop per call, median and p90 over the held-out
  real crops of models/plate_ocr_split.json (br-plate-crops, eu-plate-crops) when ../shared/datasets
  exists, else synthetic plates from anpr.synth; after a warm-up of 10 crops.
- *`anpr read` per photo, warm*: `PlateRecognizer.recognize` (detector, OCR, grammar, tiles) per photo,
  median and p90 over the openalpr-us and ua-plates photos (else the sample image), after one warm-up.
- *start to first result*: wall time of a fresh `anpr read ONE.jpg` process, median of 3 taken
  alternately (files in the OS cache and model exports already built by a first run, as on a machine
  that has run anpr before).

The baseline runs from a git worktree of `--baseline` (scripts/baseline.py), with this venv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
DATASETS = REPO.parent / "shared" / "datasets"

import baseline  # noqa: E402  (same folder)


def crops(n: int) -> list[np.ndarray]:
    """Held-out real crops, or synthetic ones where the datasets are absent."""
    import cv2

    if DATASETS.is_dir():
        split = json.loads((REPO / "models" / "plate_ocr_split.json").read_text(encoding="utf-8"))["sets"]
        br, eu = ([(s, f) for f in split[s]["heldout"]] for s in ("br-plate-crops", "eu-plate-crops"))
        names = [name for pair in zip(br, eu, strict=False) for name in pair]  # both sets, whatever n
        folder = {s: DATASETS / s / "images" if (DATASETS / s / "images").is_dir() else DATASETS / s for s in split}
        return [cv2.imread(str(folder[s] / f)) for s, f in names[:n]]
    from anpr.synth import STYLES, random_plate_text, render_plate

    rng = np.random.default_rng(0)
    styles = list(STYLES)
    return [
        render_plate(random_plate_text(styles[i % len(styles)], rng), styles[i % len(styles)], rng).image
        for i in range(n)
    ]


def photos(n: int) -> list[Path]:
    found = sorted((DATASETS / "openalpr-us" / "images").glob("*.jpg")) + sorted(
        (DATASETS / "ua-plates" / "images").glob("*")
    )
    return found[:n] or [REPO / "sample_videos" / "sample_plate.jpg"]


def measure(n_crops: int, n_photos: int) -> dict[str, list[float]]:
    """Run in the side's own process (its own anpr on sys.path): per-call times in ms."""
    import cv2

    from anpr.config import load_config
    from anpr.recognize import PlateRecognizer

    cfg = load_config()
    if hasattr(cfg.detector, "for_photos"):  # photos' detector (a baseline revision may predate it)
        cfg = cfg.model_copy(update={"detector": cfg.detector.for_photos()})
    rec = PlateRecognizer.from_config(cfg)
    reader = rec.reader
    read = (lambda c: reader.read_batch([c])) if hasattr(reader, "read_batch") else reader.read
    out: dict[str, list[float]] = {"ocr": [], "photo": []}
    sample = crops(n_crops)
    for c in sample[:10]:
        read(c)
    for c in sample:
        t = time.perf_counter()
        read(c)
        out["ocr"].append((time.perf_counter() - t) * 1000)
    images = [cv2.imread(str(p)) for p in photos(n_photos)]
    rec.recognize(images[0])
    for image in images:
        t = time.perf_counter()
        rec.recognize(image)
        out["photo"].append((time.perf_counter() - t) * 1000)
    return out


def side(tree: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """`measure` in a fresh process whose `anpr` is the one in `tree`."""
    code = f"import json, sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); from bench_read import measure; "
    code += f"print(json.dumps(measure({args.crops}, {args.photos})))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=baseline.env(tree), cwd=tree, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_result(tree: Path, photo: Path) -> float:
    """Seconds from starting `anpr read photo` to its exit."""
    cmd = [sys.executable, "-c", "from anpr.cli import app; app()", "read", str(photo)]
    t = time.perf_counter()
    subprocess.run(cmd, env=baseline.env(tree), cwd=tree, capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=baseline.DEFAULT_BASELINE, help="git revision to compare against")
    ap.add_argument("--crops", type=int, default=300)
    ap.add_argument("--photos", type=int, default=60)
    args = ap.parse_args()
    trees = {"baseline " + args.baseline: baseline.tree(args.baseline), "current": REPO}
    photo = photos(1)[0]
    for tree in trees.values():
        first_result(tree, photo)  # builds exports and fills the OS cache
    starts: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(3):
        for name, tree in trees.items():
            starts[name].append(first_result(tree, photo))
    runs = {name: side(tree, args) for name, tree in trees.items()}

    def cell(ms: list[float]) -> str:
        return f"{statistics.median(ms):.1f} / {float(np.percentile(ms, 90)):.1f}"

    names = list(trees)
    print(f"\n{len(runs[names[0]]['ocr'])} crops, {len(runs[names[0]]['photo'])} photos; start: {photo.name}\n")
    print(f"| measurement | {' | '.join(names)} | ratio |")
    print("|---|---|---|---|")
    for key, label in (
        ("ocr", "OCR per crop, ms (median / p90)"),
        ("photo", "`anpr read` per photo warm, ms (median / p90)"),
    ):
        a, b = (runs[n][key] for n in names)
        print(f"| {label} | {cell(a)} | {cell(b)} | {statistics.median(a) / statistics.median(b):.1f}x |")
    a, b = (statistics.median(starts[n]) for n in names)
    print(f"| start to first result, s (median of 3) | {a:.2f} | {b:.2f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
