"""Fixtures for the partner exchange: a real Redis, real receivers on loopback, real keys.

Every test gets its own key prefix (deleted afterwards), so tests never see each other's streams.
Receivers run either in a thread (fast, for checks of one request) or as a child process (for tests
that kill and restart them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import RedisServer, free_port, make_event

from anpr.config import AnprConfig, load_config
from anpr.exchange.envelope import Signer, private_key_pem, public_key_b64
from anpr.exchange.receiver import create_app
from anpr.keys import Keys
from anpr.schema import PlateEvent

REDIS_URL = os.environ.get("ANPR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]
KEY_ID = "ua-test-1"
RECEIVER_ID = "md-customs"


@dataclass
class Exchange:
    """One test's world: prefix, Redis client, signing key and a config builder."""

    prefix: str
    tmp: Path
    r: redis.Redis
    key: Ed25519PrivateKey
    key_file: Path
    receiver_port: int = field(default_factory=free_port)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/v1/messages"

    def config_dict(self, **sections: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {
            "redis": {"url": REDIS_URL, "prefix": self.prefix},
            "publisher": {
                "url": self.url,
                "signing_key_file": str(self.key_file),
                "key_id": KEY_ID,
                "receiver": RECEIVER_ID,
                "sender_site": "ua-porubne",
                "consumer": "pub-1",
                "request_timeout_s": 5.0,
                "backoff_base_s": 0.05,
                "backoff_max_s": 0.5,
                "claim_idle_s": 2.0,
                "block_ms": 100,
                "health_interval_s": 0.5,
            },
            "receiver": {
                "port": self.receiver_port,
                "receiver": RECEIVER_ID,
                "trusted_keys": {KEY_ID: public_key_b64(self.key)},
            },
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return base

    def config(self, **sections: dict[str, Any]) -> AnprConfig:
        return load_config(self.write_config(**sections))

    def write_config(self, **sections: dict[str, Any]) -> Path:
        path = self.tmp / f"exchange-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(self.config_dict(**sections)))
        return path

    def signer(self, key_id: str = KEY_ID, clock: Callable[[], float] = time.time) -> Signer:
        return Signer(self.key, key_id, clock)

    def add_events(self, events: list[PlateEvent]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for ev in events:
            pipe.xadd(self.keys.events, {"event": ev.model_dump_json()})
        pipe.execute()

    def inbox_ids(self) -> list[str]:
        return [f[b"message_id"].decode() for _, f in self.r.xrange(self.keys.exchange_inbox)]

    def all_keys(self) -> set[bytes]:
        return set(self.r.scan_iter(f"{self.prefix}:*", count=1000))


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Exchange]:
    r = redis.Redis.from_url(REDIS_URL)
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(private_key_pem(key))
    ex = Exchange(prefix=f"t-{uuid.uuid4().hex[:12]}", tmp=tmp_path, r=r, key=key, key_file=key_file)
    yield ex
    for k in list(r.scan_iter(f"{ex.prefix}:*", count=1000)):
        r.delete(k)
    r.close()


class ThreadReceiver:
    """The real receiver app on uvicorn in a thread of the test process."""

    def __init__(self, cfg: AnprConfig) -> None:
        config = uvicorn.Config(
            create_app(cfg), host="127.0.0.1", port=cfg.receiver.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadReceiver:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def thread_receiver() -> Callable[[AnprConfig], ThreadReceiver]:
    """Returns a context manager: `with thread_receiver(cfg): ...`."""
    return ThreadReceiver


class ProcessReceiver:
    """A receiver in a child process, so a test can SIGKILL and restart it."""

    def __init__(self, args: list[str], health_url: str, log: Path) -> None:
        self.args = args
        self.health_url = health_url
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessReceiver:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                # A liveness probe only (verify=False so it also works over TLS); the code under test verifies.
                if httpx.get(self.health_url, timeout=0.5, verify=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("receiver did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def process_receiver(tmp_path: Path) -> Iterator[Callable[..., ProcessReceiver]]:
    """Returns `start(config_path, faults=[...])`: the receiver CLI, or the fault-injecting one."""
    started: list[ProcessReceiver] = []

    def start(config_path: Path, port: int, faults: list[str] | None = None, scheme: str = "http") -> ProcessReceiver:
        if faults is None:
            args = [sys.executable, "-m", "anpr.exchange", "exchange-receiver", "--config", str(config_path)]
        else:
            script = Path(__file__).with_name("faulty_receiver.py")
            args = [sys.executable, str(script), "--config", str(config_path), *faults]
        rec = ProcessReceiver(args, f"{scheme}://127.0.0.1:{port}/healthz", tmp_path / "receiver.log")
        started.append(rec)
        return rec.start()

    yield start
    for rec in started:
        rec.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def event_factory() -> Callable[..., PlateEvent]:
    return make_event
