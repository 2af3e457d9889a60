"""The second transport: XADD into the partner's Redis, consumed there by the ingest through the same checks."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from anpr.exchange.envelope import Envelope, SignedMessage
from anpr.exchange.publisher import Publisher
from anpr.exchange.receiver import Intake, LandingIngest
from anpr.exchange.transport import RedisStreamTransport
from anpr.redis_client import connect
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange

    EventFactory = Callable[..., PlateEvent]


def test_publisher_to_partner_redis_then_ingest_stores_each_once(
    exchange: Exchange, event_factory: EventFactory
) -> None:
    # One Redis prefix plays both sides: our events stream, and the partner's landing stream.
    landing = exchange.keys.exchange_landing
    cfg = exchange.config(
        publisher={"transport": "redis", "partner_redis_url": exchange.config().redis.url, "partner_stream": landing}
    )
    events = [event_factory(i) for i in range(25)]
    exchange.add_events(events)
    pub = Publisher(cfg, connect(cfg.redis), RedisStreamTransport(cfg.publisher), exchange.signer())
    pub.run(burst=True)
    pub.close()
    assert exchange.r.xlen(landing) == 25
    assert exchange.r.xpending(exchange.keys.events, cfg.publisher.group)["pending"] == 0

    # What the partner's consumer also finds: a message sent again (a retry signs afresh), an exact
    # copy of one (a replay), a tampered one, and an entry that is not a message at all.
    entries = exchange.r.xrange(landing)
    first = SignedMessage.model_validate_json(entries[0][1][b"message"])
    resent = exchange.signer().sign(Envelope.model_validate_json(first.payload))
    exchange.r.xadd(landing, {"message": resent.model_dump_json()})
    replay_id = exchange.r.xadd(landing, entries[0][1])
    tampered = json.loads(entries[1][1][b"message"])
    tampered["payload"] = tampered["payload"].replace(events[1].plate, "BB0000XX")
    bad_id = exchange.r.xadd(landing, {"message": json.dumps(tampered)})
    junk_id = exchange.r.xadd(landing, {"message": "{nope"})
    # A crash after storing the first entry but before acknowledging it.
    exchange.r.xgroup_create(landing, LandingIngest.GROUP, id="0")
    exchange.r.xreadgroup(LandingIngest.GROUP, socket.gethostname(), {landing: ">"}, count=1)
    first_id = entries[0][0].decode()
    Intake(cfg.receiver, exchange.r, exchange.keys).accept([first], int(first_id.split("-")[0]) / 1000, token=first_id)

    for _ in range(2):  # a second run finds nothing to do
        LandingIngest(cfg, connect(cfg.redis)).run(burst=True)

    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
    rejected = [
        {k.decode(): v.decode() for k, v in f.items()} for _, f in exchange.r.xrange(exchange.keys.exchange_rejected)
    ]
    assert [(r["source_id"], r["error"]) for r in rejected] == [
        (replay_id.decode(), "replay"),
        (bad_id.decode(), "bad_signature"),
        (junk_id.decode(), "malformed"),
    ]
    assert exchange.r.xpending(landing, LandingIngest.GROUP)["pending"] == 0
    received = {k.decode(): int(v) for k, v in exchange.r.hgetall(exchange.keys.receiver_stats).items()}
    assert received == {"stored": 25, "duplicate": 1}
