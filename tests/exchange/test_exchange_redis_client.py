"""The Redis client policy on a real server we freeze and restart: fail fast, never write twice."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest
import redis

from anpr.config import RedisConfig
from anpr.redis_client import connect

if TYPE_CHECKING:
    from support import RedisServer


def test_client_settings_are_explicit() -> None:
    r = connect(RedisConfig(url="redis://127.0.0.1:6379/0", socket_timeout_s=1.5, connect_timeout_s=0.5, retries=3))
    kwargs = r.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["health_check_interval"]) == (
        1.5,
        0.5,
        10,
    )
    retry = kwargs["retry"]
    assert retry.get_retries() == 3
    assert retry._supported_errors == (redis.ConnectionError,)  # timeouts are never retried


@pytest.mark.slow
def test_frozen_server_fails_fast_and_the_write_is_not_repeated(own_redis: RedisServer) -> None:
    r = connect(RedisConfig(url=f"redis://127.0.0.1:{own_redis.port}/0", socket_timeout_s=0.5))
    r.ping()
    own_redis.signal(signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        r.xadd("s", {"n": 1})
    assert time.monotonic() - started < 1.5  # one socket timeout, not redis-py's default 10 retries
    own_redis.signal(signal.SIGCONT)
    time.sleep(0.2)
    assert r.xlen("s") == 1  # the server ran the XADD it had received, once


@pytest.mark.slow
def test_restarted_server_is_reconnected_transparently(own_redis: RedisServer) -> None:
    r = connect(RedisConfig(url=f"redis://127.0.0.1:{own_redis.port}/0", health_check_interval_s=0))
    r.xadd("s", {"n": 1})
    own_redis.kill()
    own_redis.start()
    # The pooled connection is dead; the connection error is retried on a new connection.
    assert r.xlen("s") == 1  # and AOF kept the acknowledged write
