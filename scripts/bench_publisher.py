"""Benchmark the partner exchange: delivered events/s by batch size, and XADD -> stored-at-partner latency.

    .venv/bin/python scripts/bench_publisher.py [--redis-url redis://127.0.0.1:6379/0] [--events 5000]
        [--batch-sizes 1,10,100] [--rate 200] [--seconds 5]

Real everything, no faults: a Redis server (must be running), the reference receiver as its own process
on loopback, the publisher as its own process (the `anpr publisher` code path). Both sides use one
Redis, so latency is measured on one clock: the stream id of the event's XADD against the stream id
of the receiver's XADD into its inbox (millisecond resolution).

- throughput: N events are written first, then `publisher --burst` drains them. Two figures: events
  / wall time of the publisher process (start-up included: pessimistic), and events / time between
  the first and the last message stored at the receiver (steady state);
- latency: a running publisher, events written one by one at a steady rate.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anpr.exchange.envelope import private_key_pem, public_key_b64
from anpr.keys import Keys
from anpr.schema import Direction, PlateEvent

REPO = Path(__file__).resolve().parent.parent


def event(i: int) -> PlateEvent:
    seen = datetime(2025, 6, 1, 8, 0, tzinfo=UTC) + timedelta(milliseconds=i)
    plate = f"AA{i % 10000:04d}B{chr(65 + i // 10000 % 26)}"
    return PlateEvent(
        event_id=PlateEvent.make_id("ua-bench", "l1", plate, seen),
        site="ua-bench",
        lane="l1",
        camera="cam1",
        direction=Direction.EXIT,
        plate=plate,
        country="UA",
        confidence=0.93,
        char_confidences=[0.9] * len(plate),
        first_seen=seen,
        last_seen=seen + timedelta(seconds=2),
        best_seen=seen + timedelta(seconds=1),
        reads=3,
        box=[10, 20, 110, 45],
    )


class Setup:
    """One prefix, one receiver process, one config; cleaned up on exit."""

    def __init__(self, redis_url: str, tmp: Path, batch_size: int) -> None:
        self.r = redis.Redis.from_url(redis_url)
        self.keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
        key = Ed25519PrivateKey.generate()
        key_file = tmp / f"{self.keys.prefix}.pem"
        key_file.write_bytes(private_key_pem(key))
        self.port = free_port()
        self.config = tmp / f"{self.keys.prefix}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "redis": {"url": redis_url, "prefix": self.keys.prefix},
                    "publisher": {
                        "url": f"http://127.0.0.1:{self.port}/v1/messages",
                        "signing_key_file": str(key_file),
                        "key_id": "bench",
                        "consumer": "bench-1",
                        "batch_size": batch_size,
                        "health_interval_s": 1.0,
                    },
                    "receiver": {"port": self.port, "trusted_keys": {"bench": public_key_b64(key)}},
                }
            )
        )
        self.log = (tmp / f"{self.keys.prefix}.log").open("ab")
        self.receiver = self.spawn("exchange-receiver")
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.receiver.poll() is not None:
                raise RuntimeError("receiver did not start")
            time.sleep(0.05)

    def spawn(self, *command: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "anpr.exchange", *command, "--config", str(self.config)]
        return subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def stored(self) -> dict[str, int]:
        """message id -> ms timestamp of its inbox entry."""
        return {
            f[b"message_id"].decode(): int(entry_id.split(b"-")[0])
            for entry_id, f in self.r.xrange(self.keys.exchange_inbox)
        }

    def close(self) -> None:
        self.receiver.terminate()
        self.receiver.wait(timeout=10)
        self.log.close()
        for k in list(self.r.scan_iter(f"{self.keys.prefix}:*", count=1000)):
            self.r.delete(k)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def throughput(s: Setup, n: int) -> tuple[float, float]:
    pipe = s.r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(s.keys.events, {"event": event(i).model_dump_json()})
    pipe.execute()
    started = time.perf_counter()
    publisher = s.spawn("publisher", "--burst")
    if publisher.wait(timeout=600) != 0:
        raise RuntimeError("publisher failed")
    took = time.perf_counter() - started
    stored = s.stored()
    if len(stored) != n:
        raise RuntimeError(f"{len(stored)} of {n} stored")
    first, last = min(stored.values()), max(stored.values())
    return n / took, (n - 1) / max(0.001, (last - first) / 1000)


def latency(s: Setup, rate: float, seconds: float) -> list[float]:
    publisher = s.spawn("publisher")
    time.sleep(2.0)  # let it start and block on the stream
    sent: dict[str, int] = {}
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ev = event(1_000_000 + i)
        entry_id = s.r.xadd(s.keys.events, {"event": ev.model_dump_json()})
        sent[ev.event_id] = int(entry_id.split(b"-")[0])
    deadline = time.monotonic() + 30
    while len(stored := s.stored()) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    publisher.terminate()
    publisher.wait(timeout=10)
    if len(stored) != n:
        raise RuntimeError(f"{len(stored)} of {n} stored")
    return sorted(float(stored[k] - sent[k]) for k in sent)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=5000, help="events per throughput run")
    parser.add_argument("--batch-sizes", default="1,10,100")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s written in the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            s = Setup(args.redis_url, Path(tmp), batch)
            try:
                wall, steady = throughput(s, args.events)
            finally:
                s.close()
            rows.append(
                (
                    f"throughput, batch_size={batch}",
                    f"{args.events} events",
                    f"{wall:,.0f} events/s (steady {steady:,.0f}/s)",
                )
            )
        s = Setup(args.redis_url, Path(tmp), 100)
        try:
            lat = latency(s, args.rate, args.seconds)
        finally:
            s.close()
    rows.append(
        (
            f"latency XADD -> stored, {args.rate:g} events/s",
            f"{len(lat)} events",
            f"p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms, max {lat[-1]:.0f} ms",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    header = ("measurement", "size", "result")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
