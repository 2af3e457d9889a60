"""Benchmark of the console's live path: event XADD -> hit visible in the officer's browser, as one table.

Events are written at --rate events/s by EventSink (the pipeline's own writer, plate crop included) under
a fresh Redis prefix; every --hit-every'th carries a watchlisted plate. `anpr archive`, `anpr hits run`
and `anpr console` run as the processes users run, on a fresh PostgreSQL database. Headless Chromium
(Debian's /usr/bin/chromium driven by Playwright) is logged in as an officer on the Hits page, where a
MutationObserver records when each `[data-hit-id]` element appears (performance.timeOrigin +
performance.now(): this machine's wall clock). Per hit: that time minus the wall time just before its
event's XADD. Target: p95 <= 1 s over 100 hits at 10 events/s.

Baseline in the same table: XADD -> the hit read from the hits stream by a blocking XREAD (the matcher's
share, without the console and the browser).

Needs the PostgreSQL and Redis of this machine (127.0.0.1: 5432, 6379) and /usr/bin/chromium.
Run: .venv/bin/python scripts/bench_console.py [--hits 100] [--rate 10] [--hit-every 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import yaml
from playwright.sync_api import Page, sync_playwright
from rich.console import Console
from rich.table import Table

from anpr.config import REPO_ROOT, load_config
from anpr.events import EventSink
from anpr.keys import Keys
from anpr.schema import Direction, Hit, PlateEvent

ANPR = str(Path(sys.executable).parent / "anpr")
CHROMIUM = "/usr/bin/chromium"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "anpr_bench_console"
REDIS_URL = "redis://127.0.0.1:6379/0"
P95_TARGET_MS = 1000.0
USER, PASSWORD = "bench-officer", "bench-officer-password"
CROP = (REPO_ROOT / "sample_videos" / "sample_plate.jpg").read_bytes()

# Records when each [data-hit-id] element first appears, and the page's EventSources (to wait until live).
INSTRUMENT_JS = """
(() => {
  window.__hitSeen = {};
  window.__eventSources = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__eventSources.push(this); }
  };
  const mark = (el) => {
    const id = el.getAttribute('data-hit-id');
    if (id && !(id in window.__hitSeen)) window.__hitSeen[id] = performance.timeOrigin + performance.now();
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes') { mark(r.target); continue; }
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.matches('[data-hit-id]')) mark(n);
        n.querySelectorAll('[data-hit-id]').forEach(mark);
      }
    }
  }).observe(document, {childList: true, subtree: true, attributes: true, attributeFilter: ['data-hit-id']});
})();
"""


@dataclass(frozen=True)
class Row:
    name: str
    latencies_ms: list[float]
    expected: int
    detail: str
    target: str
    met: bool | None


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


def print_table(rows: list[Row], title: str) -> None:
    table = Table(title=title)
    for column in ("bench", "n", "p50 ms", "p95 ms", "max ms", "detail", "target", "met"):
        table.add_column(column, justify="right" if column.endswith(("n", "ms")) else "left")
    for r in rows:
        lat = r.latencies_ms
        met = "-" if r.met is None else ("[green]yes[/]" if r.met else "[red]NO[/]")
        table.add_row(
            r.name,
            f"{len(lat)}/{r.expected}",
            f"{percentile(lat, 50):.0f}",
            f"{percentile(lat, 95):.0f}",
            f"{max(lat, default=float('nan')):.0f}",
            r.detail,
            r.target,
            met,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)


def fresh_database() -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"


def drop_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def write_config(tmp: Path, prefix: str, db_url: str, port: int) -> Path:
    """configs/dev.yaml on the shared Redis under `prefix`, the store on `db_url`, the console on `port`."""
    cfg: dict[str, Any] = yaml.safe_load((REPO_ROOT / "configs" / "dev.yaml").read_text())
    cfg.update(
        redis={"url": REDIS_URL, "prefix": prefix},
        events={"spool_dir": str(tmp / "spool")},
        store={"url": db_url, "data_dir": str(tmp / "store")},
        archive={"consumer": "bench", "metrics_port": 0},
        hits={"consumer": "bench"},
        console={"host": "127.0.0.1", "port": port, "secure_cookies": False},
    )
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def anpr(config: Path, *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [ANPR, *args, "--config", str(config)], input=stdin, capture_output=True, text=True, cwd=REPO_ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"anpr {' '.join(args)}: {done.stdout}{done.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_events(n: int, hit_every: int, start: datetime, rate: float) -> tuple[list[PlateEvent], list[str]]:
    """n events one lane at `rate`/s; every hit_every'th plate is to be listed (returned second)."""
    events, listed = [], []
    for i in range(n):
        hit = i % hit_every == 0
        plate = f"KA{i:04d}HB" if hit else f"BC{i:04d}XE"
        if hit:
            listed.append(plate)
        seen = start + timedelta(seconds=i / rate)
        events.append(
            PlateEvent(
                event_id=PlateEvent.make_id("dev", "lane1", plate, seen),
                site="dev",
                lane="lane1",
                camera="front",
                direction=Direction.ENTRY if i % 3 else Direction.EXIT,
                plate=plate,
                country="UA",
                confidence=0.96,
                char_confidences=[0.96] * len(plate),
                first_seen=seen - timedelta(seconds=2),
                last_seen=seen,
                best_seen=seen - timedelta(seconds=1),
                reads=5,
                box=[400, 600, 560, 640],
            )
        )
    return events, listed


class StreamReader(threading.Thread):
    """The baseline: blocking XREAD on the hits stream, noting when each hit arrives."""

    def __init__(self, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.keys = keys
        self.got: dict[str, float] = {}
        self.event_of: dict[str, str] = {}
        self.stop = threading.Event()
        self.r = redis.Redis.from_url(REDIS_URL)
        self.last: bytes | str = (
            self.r.xinfo_stream(keys.hits)["last-generated-id"] if self.r.exists(keys.hits) else "0-0"
        )

    def run(self) -> None:
        while not self.stop.is_set():
            got: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = self.r.xread(  # type: ignore[assignment]
                {self.keys.hits: self.last}, block=200
            )
            for _, entries in got or []:
                now = time.time()
                for entry_id, fields in entries:
                    self.last = entry_id
                    hit = Hit.model_validate_json(fields[b"hit"])
                    self.got.setdefault(hit.hit_id, now)
                    self.event_of[hit.hit_id] = hit.event.event_id


def wait_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"anpr console exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("anpr console did not answer in 60 s")


def open_hits_page(page: Page, url: str) -> None:
    page.goto(f"{url}/login")
    page.fill("form#login input[name=username]", USER)
    page.fill("form#login input[name=password]", PASSWORD)
    page.click("form#login button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    page.goto(f"{url}/hits")
    page.wait_for_function("window.__eventSources.some((s) => s.readyState === 1)")


def run(hits: int, rate: float, hit_every: int) -> tuple[list[Row], str]:
    """The two rows, and the Chromium version."""
    prefix = f"bench-console-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    events, listed = make_events(hits * hit_every, hit_every, datetime.now(UTC), rate)
    procs: list[subprocess.Popen[bytes]] = []
    r = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        config = write_config(tmp, prefix, fresh_database(), port)
        try:
            csv = tmp / "watchlist.csv"
            csv.write_text("plate,mode,severity\n" + "".join(f"{p},exact,check\n" for p in listed), encoding="utf-8")
            anpr(config, "watchlist", "import", str(csv), "--by", "bench")
            anpr(config, "users", "add", USER, "--role", "officer", "--password-stdin", stdin=PASSWORD + "\n")
            for name, args in (("archive", ["archive"]), ("hits", ["hits", "run"]), ("console", ["console"])):
                log = (tmp / f"{name}.log").open("wb")
                procs.append(subprocess.Popen([ANPR, *args, "--config", str(config)], stdout=log, stderr=log))
            url = f"http://127.0.0.1:{port}"
            wait_serving(url, procs[-1], tmp / "console.log")
            sink = EventSink.from_config(load_config(config).redis, load_config(config).events)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
                version = browser.version
                context = browser.new_context(viewport={"width": 1366, "height": 768}, bypass_csp=True)
                context.add_init_script(INSTRUMENT_JS)
                page = context.new_page()
                page.set_default_timeout(15_000)
                open_hits_page(page, url)
                reader = StreamReader(keys)
                reader.start()
                time.sleep(1.0)  # the matcher has loaded the watchlist (it reloads every few seconds at most)

                sent: dict[str, float] = {}
                t0 = time.time()
                for i, ev in enumerate(events):
                    wait = t0 + i / rate - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    sent[ev.event_id] = time.time()
                    sink.publish(ev, CROP)
                deadline = time.time() + 15
                while time.time() < deadline:
                    if page.evaluate("Object.keys(window.__hitSeen).length") >= hits and len(reader.got) >= hits:
                        break
                    page.wait_for_timeout(100)
                seen: dict[str, float] = page.evaluate("window.__hitSeen")
                reader.stop.set()
                reader.join(5)
                browser.close()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for key in r.scan_iter(f"{prefix}:*"):
                r.delete(key)
            r.close()
            drop_database()

    pairs = reader.event_of.items()
    browser_ms = [seen[h] - sent[e] * 1000 for h, e in pairs if h in seen]
    stream_ms = [(reader.got[h] - sent[e]) * 1000 for h, e in pairs if h in reader.got]
    p95 = percentile(browser_ms, 95)
    load = f"{rate:g} events/s, 1 in {hit_every} a hit, {len(events)} events"
    rows = [
        Row(
            name="XADD -> hit visible in the browser",
            latencies_ms=browser_ms,
            expected=hits,
            detail=f"{load}; archive, hits matcher, console running",
            target=f"p95 <= {P95_TARGET_MS:.0f} ms",
            met=len(browser_ms) == hits and p95 <= P95_TARGET_MS,
        ),
        Row(
            name="  baseline: XADD -> hit on the hits stream",
            latencies_ms=stream_ms,
            expected=hits,
            detail="blocking XREAD of the hits stream, no console",
            target="",
            met=None,
        ),
    ]
    return rows, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=100, help="hits to measure")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--hit-every", type=int, default=2, help="one event in this many is watchlisted")
    args = parser.parse_args()
    rows, version = run(args.hits, args.rate, args.hit_every)
    print_table(rows, f"anpr console live latency ({os.cpu_count()} CPUs, Chromium {version})")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
