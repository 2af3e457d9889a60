"""The process base of every runtime stage: how a child starts, logs, reports and stops.

Each child runs a picklable `target(ctx)` in a fresh interpreter (spawn: no threads, locks or
OpenVINO/torch state inherited from the parent), titled `anpr: <kind> <ident>` so `ps` and `top`
say which camera or worker is which. Its log records go through a queue to the parent, which
hands them to its own logging tree; a reporter thread sends its counters on the child's own
stats pipe; it watches the one stop flag. Ctrl-C (SIGINT to the whole process group) is ignored: the
parent decides. SIGTERM to the child alone makes it drain and exit with 143, so the supervisor
restarts it.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from types import FrameType

from setproctitle import setproctitle

from anpr.runtime.stats import StageMeter

log = logging.getLogger(__name__)

SPAWN = multiprocessing.get_context("spawn")
"""Every runtime process, queue and semaphore comes from this one context (they cannot be mixed)."""

_TERMINATED_EXIT = 128 + signal.SIGTERM  # the shell's convention for "ended by SIGTERM"


class SharedFlag:
    """A signal every process can watch (stop; capture may begin): a byte in shared memory.

    Not an mp.Event on purpose: that is a lock plus a condition, and a child killed while inside
    `is_set()` would leave the lock held and hang every other process at its next check. A byte
    has no lock to orphan and is safe to set from a signal handler.
    """

    def __init__(self) -> None:
        self._flag = SPAWN.RawValue(ctypes.c_bool, False)

    def set(self) -> None:
        self._flag.value = True

    def is_set(self) -> bool:
        return bool(self._flag.value)


StopFlag = SharedFlag


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process: what it is (for titles, logs and metrics) and what it runs.

    `target` must be picklable (a module-level function or an instance of a module-level class)
    and should return soon after `ctx.stopping` turns true.
    """

    kind: str  # "camera" or "worker": the stage label in titles and metrics
    ident: str  # camera name or worker index
    target: Callable[[ChildContext], None]

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.ident}"


@dataclass(frozen=True)
class ChildChannels:
    """What every child shares with the supervisor, created once before the first child starts."""

    stop: StopFlag
    logs: Queue[logging.LogRecord]
    stats_interval_s: float
    activity_window_s: float = 10.0  # what StatsReport.cameras' `recent` counts (runtime.health.lane_idle_s)


class ChildContext:
    """A stage body's view of its process: stop checks, its meter and the state it reports."""

    _POLL_S = 0.05  # waits poll the stop flag: there is nothing to block on that a kill cannot orphan

    def __init__(self, spec: ChildSpec, channels: ChildChannels, stats: Connection) -> None:
        self.name = spec.name
        self.meter = StageMeter(channels.activity_window_s)
        self._channels = channels
        self._stats = stats
        self._terminated = False  # SIGTERM to this child alone, or its parent died
        self._state: Callable[[], str] = lambda: "running"
        self._last_state: str | None = None
        self._state_since = time.time()  # the process start, until its first state is read
        self._report_now = threading.Event()
        self._report_lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._terminated or self._channels.stop.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`, waking early when stopping; returns `stopping`."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._POLL_S, left))
        return True

    def set_state(self, state: Callable[[], str]) -> None:
        """Where the reporter thread reads this stage's state (called off the hot path); reported at
        once, not at the next interval: the supervisor starts the cameras when the workers turn ready."""
        self._state = state
        self._report_now.set()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminated = True  # only a flag: a signal handler must not take locks

    def _report(self) -> None:
        # The reporter thread and the final report at exit share one pipe; a send stuck on a full
        # pipe (parent not reading) must not hold up the exit for long.
        if not self._report_lock.acquire(timeout=2.0):
            return
        try:
            self._report_locked()
        finally:
            self._report_lock.release()

    def _report_locked(self) -> None:
        try:
            state = self._state()
        except Exception as exc:  # a broken state getter must not silence the heartbeat
            state = f"unknown ({exc!r})"
        if state != self._last_state:
            if self._last_state is not None:
                self._state_since = time.time()
            self._last_state = state
        report = self.meter.report(self.name, os.getpid(), state, self._state_since)
        # A full pipe (parent not reading) blocks the reporter, never the stage. A closed pipe means
        # the parent is gone: the parent-death check below handles that.
        with suppress(OSError):
            self._stats.send(report)

    def _report_forever(self, parent_pid: int) -> None:
        """Reporter thread: a heartbeat even while the stage body is blocked (a camera reconnecting)."""
        while not self.stopping:
            self._report_now.wait(self._channels.stats_interval_s)
            self._report_now.clear()
            if os.getppid() != parent_pid:
                log.error("%s: supervisor died; draining and exiting", self.name)
                self._terminated = True
            self._report()


def _log_to_parent(logs: Queue[logging.LogRecord], level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(logs))
    root.setLevel(level)


def child_main(spec: ChildSpec, channels: ChildChannels, stats: Connection, log_level: int) -> None:
    """Entry point of every child process; `log_level` is the parent's when it started the child.

    `stats` is this launch's own pipe, the child its only writer: a child killed in the middle of a
    send can break only its own pipe. (A queue shared by all children has one write lock; a child
    SIGKILLed while holding it silenced every other child's stats for good, seen in CI.)
    """
    setproctitle(f"anpr: {spec.kind} {spec.ident}")
    _log_to_parent(channels.logs, log_level)
    # Ctrl-C reaches the whole process group; the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = ChildContext(spec, channels, stats)
    signal.signal(signal.SIGTERM, ctx._on_sigterm)
    # A stats pipe nobody reads must not hold up exit; unsent reports are worthless then.
    threading.Thread(target=ctx._report_forever, args=(os.getppid(),), name="stats", daemon=True).start()
    try:
        spec.target(ctx)
    except Exception:
        log.exception("%s crashed", spec.name)
        sys.exit(1)
    finally:
        ctx._report()
    if ctx._terminated:
        sys.exit(_TERMINATED_EXIT)


def describe_exit(code: int | None) -> str:
    """An exit status in words for logs and the health document."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
