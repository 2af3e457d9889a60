"""Helpers for tests against Redis: a client that fails fast, and a port where nothing listens."""

from __future__ import annotations

import socket

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def fast_client(port: int) -> redis.Redis:
    """No retries, short timeouts: an outage shows at the first command, so the tests stay fast."""
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
