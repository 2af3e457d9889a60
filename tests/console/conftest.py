"""The console as users run it, for the browser tests: real processes, real Chromium, real Redis and PostgreSQL.

One stack per test module (starting Chromium, the console and a replay costs seconds): `anpr console`,
`anpr archive` and `anpr hits run` on a fresh PostgreSQL database and a fresh Redis key prefix, users made
with `anpr users add`, a watchlist imported with `anpr watchlist import`.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from console_support import CHROMIUM, USERS, WATCHLIST_CSV, ConsoleStack, Ui, run_anpr, wait_until_serving
from history_support import ANPR, REDIS_URL, Consumers, history_config
from playwright.sync_api import Browser, sync_playwright
from support import free_port, pg_database

from anpr.config import REPO_ROOT
from anpr.keys import Keys


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    try:
        with pg_database() as db_url:
            yield from _running(tmp, prefix, port, db_url)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


def _running(tmp: Path, prefix: str, port: int, db_url: str) -> Iterator[ConsoleStack]:
    cfg = history_config(
        tmp, prefix, db_url, extra={"console": {"host": "127.0.0.1", "port": port, "secure_cookies": False}}
    )
    watchlist = tmp / "watchlist.csv"
    watchlist.write_text(WATCHLIST_CSV, encoding="utf-8")
    done = run_anpr("watchlist", "import", str(watchlist), "--by", "super1", config=cfg)
    assert done.returncode == 0, done.stderr
    for name, (role, password) in USERS.items():
        done = run_anpr("users", "add", name, "--role", role, "--password-stdin", config=cfg, stdin=password + "\n")
        assert done.returncode == 0, f"anpr users add {name}: {done.stdout}{done.stderr}"
    log_path = tmp / "console.log"
    with Consumers(cfg, which=("archive", "hits")) as consumers, log_path.open("ab") as log:
        proc = subprocess.Popen([ANPR, "console", "--config", str(cfg)], stdout=log, stderr=log, cwd=REPO_ROOT)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_serving(base_url, proc, log_path)
            yield ConsoleStack(cfg, base_url, db_url, Keys(prefix), proc, consumers)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(stack: ConsoleStack, browser: Browser) -> Ui:
    """Chromium and the console; the browser closes (ending its live streams) before the console stops."""
    return Ui(browser, stack)
