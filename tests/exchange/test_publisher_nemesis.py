"""Nemesis: 1,000 events through a hostile partner and a publisher that keeps getting killed.

Real Redis, real receiver process on loopback behind a fault injector (429 with Retry-After, 500
before and after storing, stalls past the publisher's timeout before and after storing), the
receiver SIGKILLed and restarted, publishers SIGKILLed while holding unacknowledged entries, one of
them never restarted (its entries must be claimed by the other). In the end every event is stored at
the receiver exactly once and nothing is left pending.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ProcessReceiver

    EventFactory = Callable[..., PlateEvent]

N_EVENTS = 1000
WAVES = 4
FAULTS = ("429", "500", "500_after_store", "stall_before", "stall_after_store")
PUBLISHER = {
    "batch_size": 25,
    "request_timeout_s": 0.6,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.3,
    "max_retry_after_s": 0.2,
    "claim_idle_s": 1.5,
    "block_ms": 100,
}


class Publishers:
    """Publisher processes started from the CLI, with their output kept for a failure report."""

    def __init__(self, ex: Exchange, tmp: Path) -> None:
        self.ex = ex
        self.log = tmp / "publishers.log"
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, consumer: str, *extra: str) -> subprocess.Popen[bytes]:
        cfg = self.ex.write_config(publisher={**PUBLISHER, "consumer": consumer})
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "anpr.exchange", "publisher", "--config", str(cfg), *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.running.append(proc)
        return proc

    def kill_mid_batch(self, proc: subprocess.Popen[bytes], consumer: str, timeout: float = 20) -> int:
        """SIGKILL as soon as the consumer holds entries it has read but not acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                held = self.ex.r.xpending_range(self.ex.keys.events, "exchange-publisher", "-", "+", 1000, consumer)
            except redis.ResponseError:  # NOGROUP: the publisher has not created its group yet
                held = []
            if held:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return len(held)
            assert proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "publisher never held a batch"
            time.sleep(0.002)

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_every_event_stored_exactly_once_despite_faults_and_kills(
    exchange: Exchange,
    process_receiver: Callable[..., ProcessReceiver],
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    cfg_path = exchange.write_config()
    schedule = ",".join(FAULTS)
    faults = ["--schedule", schedule, "--p-fault", "0.3", "--stall-s", "1.0", "--retry-after", "0.1"]
    receiver = process_receiver(cfg_path, exchange.receiver_port, [*faults, "--seed", "1"])
    events = [event_factory(i) for i in range(N_EVENTS)]
    wave = N_EVENTS // WAVES
    pubs = Publishers(exchange, tmp_path)
    started = time.monotonic()
    try:
        # Wave 1: a publisher that dies holding a batch and never comes back (XAUTOCLAIM's job).
        exchange.add_events(events[:wave])
        held_by_lost = pubs.kill_mid_batch(pubs.start("pub-lost"), "pub-lost")
        pub = pubs.start("pub-1")
        # Wave 2: pub-1 killed mid-batch and restarted under the same name (re-delivers its own PEL).
        exchange.add_events(events[wave : 2 * wave])
        pubs.kill_mid_batch(pub, "pub-1")
        pub = pubs.start("pub-1")
        # Wave 3: the receiver dies and comes back; pub-1 is killed again meanwhile.
        exchange.add_events(events[2 * wave : 3 * wave])
        time.sleep(0.3)
        receiver.kill()
        time.sleep(0.3)
        receiver.args[-1] = "2"  # new fault seed for the new receiver process
        receiver.start()
        pubs.kill_mid_batch(pub, "pub-1")
        # Wave 4: the rest, then one burst run must finish the job alone, faults still on.
        exchange.add_events(events[3 * wave :])
        burst = pubs.start("pub-1", "--burst")
        assert burst.wait(timeout=90) == 0, pubs.log.read_text()[-3000:]
    finally:
        pubs.stop_all()
    took = time.monotonic() - started

    stored = exchange.inbox_ids()
    assert len(stored) == N_EVENTS, f"{len(stored)} stored"
    assert sorted(stored) == sorted(e.event_id for e in events)  # each exactly once
    assert held_by_lost > 0
    summary = exchange.r.xpending(exchange.keys.events, "exchange-publisher")
    assert summary["pending"] == 0
    [group] = exchange.r.xinfo_groups(exchange.keys.events)
    assert group["lag"] == 0
    assert exchange.r.xlen(exchange.keys.exchange_dead) == 0
    stats = {k.decode(): int(v) for k, v in exchange.r.hgetall(exchange.keys.publisher_stats).items()}
    assert stats["delivered"] == N_EVENTS  # XACK's own count: every event acknowledged once
    assert stats["retried"] > 0 and "dead_lettered" not in stats
    injected = {k.decode(): int(v) for k, v in exchange.r.hgetall(f"{exchange.prefix}:test:faults").items()}
    assert all(injected.get(kind, 0) >= 1 for kind in FAULTS), injected
    received = {k.decode(): int(v) for k, v in exchange.r.hgetall(exchange.keys.receiver_stats).items()}
    assert received["stored"] == N_EVENTS and received["duplicate"] >= 1, received
    print(f"nemesis: {took:.1f} s, publisher {stats}, receiver {received}, faults {injected}")
