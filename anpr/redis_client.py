"""The one way anpr opens a Redis connection: explicit timeouts and a deliberate retry policy.

redis-py's defaults do not suit us (shared/NOTES.md): a plain `redis.Redis()` retries every command
10 times on timeouts *and* connection errors, so a reply lost on a slow link turns one XADD into two,
and a frozen server blocks a caller for ~14 s. Here:

- every socket operation has a limit (`socket_timeout_s`, `connect_timeout_s`), so a frozen Redis
  surfaces as an error like a dead one;
- pooled connections idle longer than `health_check_interval_s` are PINGed before reuse, so the
  first command after a Redis restart does not fail on a half-closed socket;
- only *connection* errors are retried (a few times, with jittered backoff). A timeout is never
  retried: the command may have run, and only the caller knows whether running it twice is harmless.
  A connection reset after the command was sent can still repeat it, so every write in anpr is
  idempotent (a Lua script with a marker key, XACK) or tolerates a duplicate (consumers dedup by id).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry
from redis.sentinel import Sentinel

from anpr.config import RedisConfig


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client for `cfg.url`, for the primary the sentinels name, or for an embedded Redis in
    `cfg.data_dir` when neither is set.

    Through sentinels, every new connection asks them for the current primary, and a connection to a
    demoted or dead one fails and is retried (connection errors only, as above) on the new primary:
    the client follows a failover by itself. Responses are bytes (not decoded): plate crops are
    stored as JPEG bytes under the same client.
    """
    options: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout_s,
        "socket_connect_timeout": cfg.connect_timeout_s,
        "health_check_interval": cfg.health_check_interval_s,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), cfg.retries, (RedisConnectionError,)),
    }
    if cfg.sentinels:
        assert cfg.sentinel_master is not None  # RedisConfig validates that they come together
        sentinel = Sentinel(
            [sentinel_address(a) for a in cfg.sentinels],
            sentinel_kwargs={
                "socket_timeout": cfg.socket_timeout_s,
                "socket_connect_timeout": cfg.connect_timeout_s,
                "password": cfg.sentinel_password,
            },
        )
        return sentinel.master_for(cfg.sentinel_master, password=cfg.password, **options)
    url = cfg.url
    if url is None:
        from anpr.redis_embedded import start_embedded  # the no-install fallback, not the normal path

        url = start_embedded(cfg.data_dir)
    return redis.Redis.from_url(url, **options)


def sentinel_address(address: str) -> tuple[str, int]:
    """`host:port` (validated by RedisConfig) as redis-py wants it; `[::1]:26379` for IPv6."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
