"""How long anpr takes to start, as an operator sees it, in one table.

- `anpr read one.jpg`: process start to the printed result (a fresh process each run);
- `anpr run`, 2 workers, the two sample clips as cameras: process start until /health shows both
  cameras streaming and both workers having processed frames (the targets: <= 5 s and <= 10 s);
- baseline, same run: a fresh interpreter importing anpr's command line, the floor of any command.

Needs the Redis on 127.0.0.1:6379 (a key prefix of its own, deleted afterwards).
Run: .venv/bin/python scripts/bench_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis
import yaml
from rich.console import Console
from rich.table import Table

from anpr.config import REPO_ROOT

ANPR = str(Path(sys.executable).parent / "anpr")
PHOTO = REPO_ROOT / "sample_videos" / "sample_plate.jpg"
REDIS_URL = "redis://127.0.0.1:6379/0"


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=REPO_ROOT)
    return time.perf_counter() - t


def run_until_streaming(work: Path, port: int, timeout_s: float = 120.0) -> float:
    """Seconds from `anpr run` to both cameras streaming and both workers with processed frames."""
    prefix = f"bench-startup-{uuid.uuid4().hex[:8]}"
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "dev.yaml").read_text())
    cfg.update(
        redis={"url": REDIS_URL, "prefix": prefix},
        events={"spool_dir": str(work / prefix / "spool")},  # a spool belongs to one prefix
        runtime={"workers": 2, "health": {"port": port}},
    )
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    log = (work / "run.log").open("wb")
    proc = subprocess.Popen([ANPR, "run", "-c", str(path)], stdout=log, stderr=log, cwd=REPO_ROOT)
    try:
        while time.perf_counter() - t0 < timeout_s:
            try:
                doc = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                workers = [w for w in doc["workers"].values() if w.get("frames")]
                cameras = [c for c in doc["cameras"].values() if c.get("state") == "streaming"]
                if len(workers) == 2 and len(cameras) == 2:
                    return time.perf_counter() - t0
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise TimeoutError("anpr run did not stream within the timeout")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        log.close()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
        r.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=19811, help="health port of the measured `anpr run`")
    args = parser.parse_args()
    rows: list[tuple[str, list[float], str]] = []
    rows.append(
        ("baseline: import anpr.cli", [timed([sys.executable, "-c", "import anpr.cli"]) for _ in range(args.runs)], "")
    )
    rows.append(("anpr read one.jpg", [timed([ANPR, "read", str(PHOTO)]) for _ in range(args.runs)], "<= 5 s"))
    work = Path(tempfile.mkdtemp(prefix="anpr-startup-"))
    try:
        runs = [run_until_streaming(work, args.port) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows.append(("anpr run, 2 workers: cameras streaming", runs, "<= 10 s"))
    table = Table(title="anpr start-up (s)")
    for column in ("what", "runs", "median", "max", "target"):
        table.add_column(column)
    for name, values, target in rows:
        table.add_row(name, str(len(values)), f"{statistics.median(values):.2f}", f"{max(values):.2f}", target)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
