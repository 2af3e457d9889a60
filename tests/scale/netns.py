"""A small network of Linux network namespaces for tests: one per machine, joined by a bridge.

Each "machine" is a namespace with its own address on one /24, attached by a veth pair to a bridge in
the root namespace (which holds the .1 address, so the test process reaches every machine). Every
machine has its own port space, so redis-server, sentinels and `anpr run` keep their default ports.
Needs root (CAP_NET_ADMIN); `available()` says whether this machine can.

Processes started here get their own process group, so a whole machine's processes are killed with
one signal (a box "losing power"); `close()` kills what is left and removes every link and namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def available() -> str | None:
    """None when namespaces can be made here; else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"anprprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
        _ip("netns", "del", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns add` fails here: {exc}"
    return None


@dataclass
class Machine:
    name: str
    netns: str
    address: str
    link: str  # the root namespace's end of its veth pair
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `args` inside this machine, in a new process group, output appended to `log`."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # `ip netns exec` execs the command: its pid leads the group
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """SIGKILL one process group (or all of this machine's): no clean shutdown, like a crash."""
        for p in [proc] if proc is not None else list(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


class Network:
    """Namespaces on one bridge; use as a context manager so everything is removed afterwards."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)[:5]
        self.bridge = f"ba{self.tag}"
        self.subnet = self._free_subnet()
        self.machines: dict[str, Machine] = {}

    def _free_subnet(self) -> str:
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
        for _ in range(50):
            candidate = f"10.213.{secrets.randbelow(250) + 1}"
            if f"{candidate}.0/24" not in routes:
                return candidate
        raise RuntimeError("no free 10.213.x.0/24 subnet")

    def __enter__(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add(self, name: str) -> Machine:
        """A new machine (namespace) on the bridge, reachable at the returned Machine's address."""
        index = len(self.machines) + 1
        netns, outside, inside = f"anpr{self.tag}-{name}", f"va{self.tag}{index}", f"vp{self.tag}{index}"
        address = f"{self.subnet}.{10 + index}"
        _ip("netns", "add", netns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", netns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", netns, "link", "set", inside, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        machine = Machine(name, netns, address, outside)
        self.machines[name] = machine
        return machine

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for machine in self.machines.values():
            machine.kill()
            with contextlib.suppress(subprocess.CalledProcessError):
                # Explicitly: a namespace outlives its name while a socket of it lingers (TIME_WAIT).
                _ip("link", "del", machine.link)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", machine.netns)
        self.machines.clear()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.bridge)
