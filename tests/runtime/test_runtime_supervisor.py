"""Supervisor: restart with backoff and say why, leave finished children down, stop and kill stragglers."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_fakes import Crasher, busy, deaf, explode, finish, wait_for

from anpr.config import RuntimeConfig
from anpr.runtime.process import ChildSpec, describe_exit
from anpr.runtime.supervisor import ChildStatus, Supervisor

FAST = RuntimeConfig(
    restart_backoff_initial_s=0.1,
    restart_backoff_max_s=0.2,
    stats_interval_s=0.1,
    drain_timeout_s=2.0,
)


@pytest.fixture
def caplog_runtime(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="anpr.runtime")
    return caplog


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(FAST)
    yield sup
    sup.shutdown()


def status(sup: Supervisor, name: str) -> ChildStatus:
    return next(s for s in sup.statuses() if s.name == name)


def poll_until(sup: Supervisor, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    def step() -> bool:
        sup.poll(0.05)
        return condition()

    wait_for(step, timeout_s, what)


def messages(caplog: pytest.LogCaptureFixture, pattern: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if re.search(pattern, r.getMessage())]


@pytest.mark.slow
def test_crashing_child_restarts_with_capped_backoff_and_the_reason_logged(
    supervisor: Supervisor, caplog_runtime: pytest.LogCaptureFixture
) -> None:
    supervisor.add(ChildSpec("test", "crasher", Crasher(3)))
    supervisor.add(ChildSpec("test", "finisher", finish))
    supervisor.add(ChildSpec("test", "raiser", explode))
    supervisor.start()
    poll_until(supervisor, lambda: status(supervisor, "test:crasher").restarts >= 3, 20, "three restarts")

    died = messages(caplog_runtime, r"^test:crasher died")
    assert len(died) >= 3
    assert all("(exit code 3)" in r.getMessage() for r in died)
    delays = [float(re.findall(r"restarting in ([\d.]+) s", r.getMessage())[0]) for r in died[:3]]
    assert delays == [0.1, 0.2, 0.2]  # doubled, then capped at restart_backoff_max_s
    gaps = [b.created - a.created for a, b in itertools.pairwise(died[:3])]
    assert all(gap >= delay for gap, delay in zip(gaps, delays[:2], strict=True))

    # An exception in a stage body: the child logs the traceback, the parent the exit code.
    poll_until(supervisor, lambda: status(supervisor, "test:raiser").restarts >= 1, 10, "raiser restarted")
    crashed = messages(caplog_runtime, r"^test:raiser crashed")
    assert crashed and "RuntimeError: boom in the stage body" in crashed[0].getMessage()
    assert messages(caplog_runtime, r"^test:raiser died \(exit code 1\)")

    finisher = status(supervisor, "test:finisher")
    assert finisher.finished and finisher.restarts == 0 and finisher.last_exit == "exit code 0"
    assert messages(caplog_runtime, r"test:finisher finished \(exit code 0\); not restarted")


@pytest.mark.slow
def test_stats_titles_logs_signals_and_drain(supervisor: Supervisor, caplog_runtime: pytest.LogCaptureFixture) -> None:
    supervisor.add(ChildSpec("test", "busy", busy))
    supervisor.add(ChildSpec("test", "killed", busy))
    supervisor.start()
    poll_until(
        supervisor,
        lambda: all(s.stats is not None and s.stats.frames > 0 for s in supervisor.statuses()),
        20,
        "stats from both children",
    )
    child = status(supervisor, "test:busy")
    assert child.alive and child.stats is not None
    assert child.stats.state == "busy" and child.stats.fps > 10 and child.stats.latency_p95_s == pytest.approx(0.01)
    assert Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")[0] == b"anpr: test busy"
    assert messages(caplog_runtime, rf"busy child {child.pid} up")  # a child's log record, relayed

    victim = status(supervisor, "test:killed")
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    poll_until(supervisor, lambda: status(supervisor, "test:killed").restarts == 1, 10, "restart after SIGKILL")
    assert messages(caplog_runtime, r"test:killed died \(killed by SIGKILL\)")

    # SIGTERM to one child alone: it drains, exits 143 and comes back.
    assert child.pid is not None
    os.kill(child.pid, signal.SIGTERM)
    poll_until(supervisor, lambda: status(supervisor, "test:busy").restarts == 1, 10, "restart after SIGTERM")
    assert messages(caplog_runtime, rf"busy child {child.pid} drained")
    assert messages(caplog_runtime, r"test:busy died \(exit code 143\)")

    poll_until(
        supervisor,
        lambda: all(s.alive and s.stats is not None for s in supervisor.statuses()),
        20,
        "both restarted children reporting",
    )
    started = time.monotonic()
    supervisor.shutdown()
    assert time.monotonic() - started < 1.5  # drained on the flag, not killed at the timeout
    assert {s.last_exit for s in supervisor.statuses()} == {"exit code 0"}
    assert not any(s.alive for s in supervisor.statuses())


@pytest.mark.slow
def test_shutdown_kills_a_child_that_ignores_stop(caplog_runtime: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(FAST.model_copy(update={"drain_timeout_s": 0.5}))
    sup.add(ChildSpec("test", "deaf", deaf))
    sup.start()
    poll_until(sup, lambda: status(sup, "test:deaf").stats is not None, 20, "the child to report")
    started = time.monotonic()
    sup.shutdown()
    assert 0.5 <= time.monotonic() - started < 3
    assert status(sup, "test:deaf").last_exit == "killed by SIGKILL"
    assert messages(caplog_runtime, r"test:deaf still running 0.5 s after stop; killing it")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (None, "running"),
        (0, "exit code 0"),
        (3, "exit code 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(code: int | None, words: str) -> None:
    assert describe_exit(code) == words


def test_duplicate_child_names_are_refused(supervisor: Supervisor) -> None:
    supervisor.add(ChildSpec("test", "a", finish))
    with pytest.raises(ValueError, match="two children named test:a"):
        supervisor.add(ChildSpec("test", "a", finish))
