"""The supervisor: starts every stage process, restarts the ones that crash, stops them all.

Restart policy: a child that dies (exception, os._exit, signal) while the runtime is not
stopping is restarted after a capped exponential backoff, and the parent logs the exit code or
signal. A child that *returns* (exit code 0: a recording ended, a camera gave up for good) is
done and stays down.

Stop: SIGINT/SIGTERM in the parent (live.stop_on_signals) set the stop flag; children finish
the work in hand and return; the parent joins them for `drain_timeout_s` and kills the rest.
"""

from __future__ import annotations

import logging
import logging.handlers
import pickle
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from anpr.runtime.process import SPAWN, ChildChannels, ChildSpec, StopFlag, child_main, describe_exit
from anpr.runtime.stats import StatsReport

if TYPE_CHECKING:
    from collections.abc import Callable

    from anpr.config import RuntimeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChildStatus:
    """A snapshot of one supervised process, for the health document and metrics."""

    name: str
    kind: str
    ident: str
    alive: bool
    pid: int | None
    restarts: int
    last_exit: str | None  # how the previous incarnation ended; None if it never did
    finished: bool  # returned normally: not restarted
    last_seen: float | None  # wall clock of its latest report, or of its start before the first; None: not started
    stats: StatsReport | None  # latest report of the current (or last) incarnation
    started_at: float | None = None  # wall clock when the current (or last) incarnation was launched
    # worker: camera -> wall clock of the latest frame of it handled by any incarnation (a restart keeps it)
    last_frame_at: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ChildSpec
    process: BaseProcess | None = None
    pid: int | None = None
    started: float = 0.0  # monotonic
    started_at: float | None = None  # wall clock
    last_seen: float | None = None  # wall clock; None until launched
    restarts: int = 0
    crashes: int = 0  # in a row, for the backoff
    restart_at: float | None = None  # monotonic
    last_exit: str | None = None
    finished: bool = False
    stats: StatsReport | None = field(default=None, repr=False)
    stats_pipe: Connection | None = field(default=None, repr=False)
    last_frame_at: dict[str, float] = field(default_factory=dict)


class Supervisor:
    """Starts, watches, restarts and finally stops the runtime's child processes."""

    def __init__(self, config: RuntimeConfig) -> None:
        self._cfg = config
        self.stop_flag = StopFlag()
        self._channels = ChildChannels(
            stop=self.stop_flag,
            logs=SPAWN.Queue(),
            stats_interval_s=config.stats_interval_s,
            activity_window_s=config.health.lane_idle_s,
        )
        self._listener = logging.handlers.QueueListener(self._channels.logs, _Relay())
        self._children: dict[str, _Child] = {}
        self._held: list[_Child] = []
        self._listening = False
        self._lock = threading.Lock()  # statuses() is read from the health server's threads

    def add(self, spec: ChildSpec) -> None:
        if spec.name in self._children:
            raise ValueError(f"two children named {spec.name}")
        self._children[spec.name] = _Child(spec)

    def start(self, hold: Callable[[ChildSpec], bool] = lambda spec: False) -> None:
        """Launch every child but those `hold` picks: `release()` launches them later."""
        self._listener.start()
        self._listening = True
        with self._lock:
            for child in self._children.values():
                if hold(child.spec):
                    self._held.append(child)
                else:
                    self._launch(child)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def release(self) -> None:
        """Launch the children `start` held back."""
        with self._lock:
            for child in self._held:
                self._launch(child)
            self._held.clear()

    @property
    def stopping(self) -> bool:
        return self.stop_flag.is_set()

    def poll(self, timeout_s: float) -> None:
        """One supervision step: take stats for up to `timeout_s`, then reap and restart children."""
        reports = self._receive(timeout_s)
        now = time.monotonic()
        with self._lock:
            for report in reports:
                child = self._children.get(report.name)
                if child is not None and child.pid == report.pid:
                    child.stats = report
                    child.last_seen = max(child.last_seen or 0.0, report.sent_at)
                    for camera in report.cameras:
                        child.last_frame_at[camera.camera] = camera.last_at
            for child in self._children.values():
                if child.process is not None and not child.process.is_alive():
                    self._reaped(child, now)
                if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                    child.restarts += 1
                    self._launch(child)
                    log.info("%s restarted (pid %s, restart %d)", child.spec.name, child.pid, child.restarts)

    def shutdown(self) -> None:
        """Stop every child: drain time first, then SIGKILL. Idempotent."""
        cfg = self._cfg
        self.stop_flag.set()
        deadline = time.monotonic() + cfg.drain_timeout_s
        with self._lock:
            running = [(c, c.process) for c in self._children.values() if c.process is not None]
        for _, process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        for child, process in running:
            if process.is_alive():
                log.warning("%s still running %.1f s after stop; killing it", child.spec.name, cfg.drain_timeout_s)
                process.kill()
                process.join()
        with self._lock:
            for child, process in running:
                child.last_exit = describe_exit(process.exitcode)
                child.process = None
                child.restart_at = None
        self._receive(0.0)
        if self._listening:
            self._listener.stop()
            self._listening = False

    def statuses(self) -> list[ChildStatus]:
        with self._lock:
            return [
                ChildStatus(
                    name=c.spec.name,
                    kind=c.spec.kind,
                    ident=c.spec.ident,
                    alive=c.process is not None and c.process.is_alive(),
                    pid=c.pid,
                    restarts=c.restarts,
                    last_exit=c.last_exit,
                    finished=c.finished,
                    last_seen=c.last_seen,
                    stats=c.stats,
                    started_at=c.started_at,
                    last_frame_at=dict(c.last_frame_at),
                )
                for c in self._children.values()
            ]

    def _launch(self, child: _Child) -> None:
        level = logging.getLogger().getEffectiveLevel()
        reader, writer = SPAWN.Pipe(duplex=False)
        process = SPAWN.Process(
            target=child_main, args=(child.spec, self._channels, writer, level), name=child.spec.name
        )
        process.start()
        writer.close()  # the child holds the only writer: its exit shows up here as EOF
        if child.stats_pipe is not None:
            child.stats_pipe.close()
        child.stats_pipe = reader
        child.process, child.pid = process, process.pid
        child.started, child.started_at = time.monotonic(), time.time()
        child.last_seen = child.started_at
        child.restart_at, child.stats = None, None

    def _reaped(self, child: _Child, now: float) -> None:
        assert child.process is not None
        code = child.process.exitcode
        child.last_exit = describe_exit(code)
        child.process = None
        if self.stopping:
            return
        if code == 0:
            child.finished = True
            log.info("%s finished (exit code 0); not restarted", child.spec.name)
            return
        cfg = self._cfg
        ran_s = now - child.started
        child.crashes = 1 if ran_s >= cfg.restart_stable_s else child.crashes + 1
        # 2**20 caps the exponent: a stage crash-looping for days must not overflow the float.
        delay = min(cfg.restart_backoff_max_s, cfg.restart_backoff_initial_s * 2 ** min(child.crashes - 1, 20))
        child.restart_at = now + delay
        log.warning(
            "%s died (%s) after %.1f s; restarting in %.1f s (crash %d in a row)",
            child.spec.name,
            child.last_exit,
            ran_s,
            delay,
            child.crashes,
        )

    def _receive(self, timeout_s: float) -> list[StatsReport]:
        """Reports waiting on the children's stats pipes, blocking up to `timeout_s` for the first."""
        with self._lock:
            pipes = {c.stats_pipe: c for c in self._children.values() if c.stats_pipe is not None}
        reports: list[StatsReport] = []
        for pipe in mp_connection.wait(list(pipes), timeout_s):
            assert isinstance(pipe, Connection)
            try:
                while pipe.poll():
                    reports.append(pipe.recv())
            except (EOFError, OSError, pickle.UnpicklingError):
                # The child exited (EOF) or died mid-send: this pipe is done; a restart opens a new one.
                pipe.close()
                with self._lock:
                    if pipes[pipe].stats_pipe is pipe:
                        pipes[pipe].stats_pipe = None
        if not pipes and timeout_s > 0:
            time.sleep(timeout_s)
        return reports


class _Relay(logging.Handler):
    """Hands a child's record to the parent's logger of the same name: the parent's config decides."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)
