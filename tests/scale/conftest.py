"""A Redis primary, a replica and three sentinels, each on its own network namespace ("machine").

Everything here is our own processes on our own namespaces: the shared Redis on 6379 is never
touched, except by the partner receiver under a test prefix (it stands for the partner's site).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netns
import pytest
import redis

MASTER = "anpr-test"
DOWN_AFTER_MS = 1000  # sentinels call the primary down after this much silence


def _wait(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class SentinelSite:
    """The lab: a network, its Redis machines, and how to reach and break them."""

    net: netns.Network
    tmp: Path
    prefix: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:10]}")
    primary: netns.Machine | None = None
    replica: netns.Machine | None = None
    sentinels: list[netns.Machine] = field(default_factory=list)
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"{m.address}:26379" for m in self.sentinels]

    def redis_config(self, **extra: object) -> dict[str, object]:
        """The `redis:` section every anpr process of the site uses."""
        return {
            "sentinels": self.sentinel_addresses,
            "sentinel_master": MASTER,
            "prefix": self.prefix,
            "socket_timeout_s": 2.0,
            "connect_timeout_s": 0.5,
            **extra,
        }

    def master_address(self) -> str | None:
        """host:port the sentinels currently name as primary (the first one that answers)."""
        for address in self.sentinel_addresses:
            host, port = address.split(":")
            try:
                answer = redis.Redis(host=host, port=int(port), socket_timeout=1).sentinel_get_master_addr_by_name(
                    MASTER
                )
            except redis.RedisError:
                continue
            if answer:
                host = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
                return f"{host}:{answer[1]}"
        return None

    def client(self) -> redis.Redis:
        """A plain client on the current primary (for the test's own reads)."""
        address = self.master_address()
        assert address is not None, "no primary known to the sentinels"
        host, port = address.split(":")
        return redis.Redis(host=host, port=int(port), socket_timeout=5)

    def start_redis(self, machine: netns.Machine, replica_of: netns.Machine | None = None) -> None:
        args = ["redis-server", "--port", "6379", "--bind", machine.address, "--protected-mode", "no", "--save", "",
                "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir", str(self.tmp)]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", replica_of.address, "6379"]
        self.servers[machine.name] = machine.popen(args, self.tmp / f"redis-{machine.name}.log")
        _wait(lambda: redis.Redis(host=machine.address, socket_timeout=1).ping(), 10, f"redis on {machine.name}")

    def start_sentinel(self, machine: netns.Machine) -> None:
        conf = self.tmp / f"sentinel-{machine.name}.conf"  # sentinels rewrite their config file: one each
        assert self.primary is not None
        conf.write_text(
            f"port 26379\nbind {machine.address}\nprotected-mode no\ndir {self.tmp}\n"
            f"sentinel monitor {MASTER} {self.primary.address} 6379 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        machine.popen(["redis-server", str(conf), "--sentinel"], self.tmp / f"sentinel-{machine.name}.log")

    def kill_primary(self) -> str:
        """SIGKILL the primary's redis-server (a crash: no shutdown, no save); returns its address."""
        assert self.primary is not None
        self.primary.kill(self.servers.pop(self.primary.name))
        return f"{self.primary.address}:6379"

    def wait_failover(self, old: str, timeout_s: float = 30) -> str:
        _wait(lambda: self.master_address() not in (None, old), timeout_s, "the sentinels to promote the replica")
        new = self.master_address()
        assert new is not None
        _wait(lambda: self.client().info("replication")["role"] == "master", 10, "the new primary to take writes")
        return new


@pytest.fixture
def sentinel_site(tmp_path: Path) -> Iterator[SentinelSite]:
    if (why := netns.available()) is not None:
        pytest.skip(why)
    with netns.Network() as net:
        site = SentinelSite(net, tmp_path)
        site.primary, site.replica = net.add("redis1"), net.add("redis2")
        site.sentinels = [site.primary, site.replica, net.add("arbiter")]
        site.start_redis(site.primary)
        site.start_redis(site.replica, replica_of=site.primary)
        for machine in site.sentinels:
            site.start_sentinel(machine)

        def ready() -> bool:
            info = redis.Redis(host=site.replica.address, socket_timeout=1).info("replication")  # type: ignore[union-attr]
            sentinels = redis.Redis(host=site.sentinels[0].address, port=26379, socket_timeout=1).sentinel_master(
                MASTER
            )
            known = int(sentinels["num-slaves"]) == 1 and int(sentinels["num-other-sentinels"]) == 2
            return info["master_link_status"] == "up" and known  # "connected" replicas may still wait to sync

        _wait(ready, 30, "the replica and all three sentinels to know each other")
        yield site
