"""Helpers of the console browser tests: the users, the watchlist, the running stack, logging in through the form."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from history_support import ANPR, Consumers
from playwright.sync_api import Browser, BrowserContext, Page

from anpr.config import REPO_ROOT
from anpr.keys import Keys

CHROMIUM = "/usr/bin/chromium"

# name -> (role, password); passwords are at least 10 characters (accounts refuses shorter ones).
USERS: dict[str, tuple[str, str]] = {
    "officer1": ("officer", "officer-one-pass-7"),
    "officer2": ("officer", "officer-two-pass-8"),
    "officer3": ("officer", "officer-three-pass-9"),
    "super1": ("supervisor", "supervisor-pass-42"),
    "admin1": ("admin", "admin-pass-1234567"),
    "locked1": ("officer", "locked-out-pass-55"),
}

# One plate of lane_day.mp4 typed in Cyrillic (BH2741KX), and a confusable (O for 0) off another (AI6093BC).
# Reasons in Ukrainian: user text is shown as typed, and the uk page must show no English.
WATCHLIST_CSV = (
    "plate,mode,severity,reason\n"
    "ВН 2741 КХ,exact,stop,номер набрано кирилицею\n"
    "AI6O93BC,confusable,check,літера O замість нуля\n"
)

# Instrumentation injected before the console's own scripts: the wall-clock time (ms since the epoch, the
# clock Redis stamps stream entries with on this machine) at which each [data-hit-id] element first appears,
# and the page's EventSources, so a test can wait until the live stream is connected.
INSTRUMENT_JS = """
(() => {
  window.__hitSeen = {};
  window.__eventSources = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__eventSources.push(this); }
  };
  const now = () => performance.timeOrigin + performance.now();
  const mark = (el) => {
    const id = el.getAttribute('data-hit-id');
    if (id && !(id in window.__hitSeen)) window.__hitSeen[id] = now();
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


@dataclass
class ConsoleStack:
    """Where the running console answers, and how to reach what is behind it."""

    config: Path
    base_url: str
    db_url: str
    keys: Keys
    console: subprocess.Popen[bytes]
    consumers: Consumers

    def anpr(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `anpr ... --config <ours>` as a user does."""
        return run_anpr(*args, config=self.config, stdin=stdin, timeout=timeout)

    def log(self) -> str:
        return (self.config.parent / "console.log").read_text(errors="replace")

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement on the console's database (autocommit); the rows it returns, if any."""
        with psycopg.connect(pg_conninfo(self.db_url), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def wait_sql(self, query: str, *params: Any, timeout: float = 20.0) -> list[tuple[Any, ...]]:
        """Poll a query until it returns a row (the archive stores events and hits shortly after Redis)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql(query, *params)
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def pg_conninfo(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def run_anpr(
    *args: str, config: Path, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANPR, *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=dict(os.environ),
    )


def wait_until_serving(base_url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"anpr console exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/login", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"anpr console did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


class Ui:
    """Real Chromium against the running console: fresh profiles, logging in through the form."""

    def __init__(self, browser: Browser, stack: ConsoleStack) -> None:
        self.browser = browser
        self.stack = stack

    def new_context(self) -> BrowserContext:
        """A fresh browser profile (no cookies) at 1366x768, instrumented (INSTRUMENT_JS)."""
        # bypass_csp: Playwright's wait_for_function evaluates its predicate, which the console's CSP forbids.
        context = self.browser.new_context(
            base_url=self.stack.base_url, viewport={"width": 1366, "height": 768}, bypass_csp=True
        )
        context.set_default_timeout(10_000)
        context.add_init_script(INSTRUMENT_JS)
        return context

    def login(self, user: str) -> tuple[BrowserContext, Page]:
        """A new browser profile logged in as `user` through the login form."""
        context = self.new_context()
        page = context.new_page()
        submit_login(page, user, USERS[user][1])
        page.wait_for_url(lambda url: "/login" not in url)
        return context, page


def submit_login(page: Page, user: str, password: str) -> None:
    page.goto("/login")
    page.fill("form#login input[name=username]", user)
    page.fill("form#login input[name=password]", password)
    page.click("form#login button[type=submit]")
    page.wait_for_load_state()


def wait_live(page: Page) -> None:
    """Until the page's EventSource is open: hits XADDed from now on reach it."""
    page.wait_for_function("window.__eventSources.some((s) => s.readyState === 1)")


def csrf_token(page: Page) -> str:
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token, "no <meta name=csrf-token> on the page"
    return token
