"""Redis itself dies under the running publisher and receiver: nothing lost, nothing stored twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import redis

from anpr.config import AnprConfig
from anpr.exchange.publisher import Publisher
from anpr.exchange.transport import HttpTransport
from anpr.redis_client import connect
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ThreadReceiver
    from support import RedisServer

    EventFactory = Callable[..., PlateEvent]


@pytest.mark.slow
def test_publisher_rides_out_a_redis_restart(
    exchange: Exchange,
    own_redis: RedisServer,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    cfg = exchange.config(
        redis={"url": url, "socket_timeout_s": 1.0, "connect_timeout_s": 0.5},
        publisher={"batch_size": 20, "backoff_max_s": 0.3},
    )
    r = redis.Redis.from_url(url)
    events = [event_factory(i) for i in range(300)]
    stop = threading.Event()
    with thread_receiver(cfg):
        pub = Publisher(cfg, connect(cfg.redis), HttpTransport(cfg.publisher), exchange.signer(), stop)
        worker = threading.Thread(target=pub.run)
        worker.start()
        try:
            for i in range(0, 300, 50):
                pipe = r.pipeline(transaction=False)
                for ev in events[i : i + 50]:
                    pipe.xadd(exchange.keys.events, {"event": ev.model_dump_json()})
                pipe.execute()
                if i == 100:
                    own_redis.kill()  # publisher and receiver both lose their storage
                    time.sleep(0.5)
                    own_redis.start()
                    r = redis.Redis.from_url(url)
            deadline = time.monotonic() + 30
            while r.xlen(exchange.keys.exchange_inbox) < 300 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join(timeout=10)
    stored = [f[b"message_id"].decode() for _, f in r.xrange(exchange.keys.exchange_inbox)]
    assert sorted(stored) == sorted(e.event_id for e in events)
    assert r.xpending(exchange.keys.events, cfg.publisher.group)["pending"] == 0
    assert int(r.hget(exchange.keys.publisher_stats, "delivered") or 0) == 300
