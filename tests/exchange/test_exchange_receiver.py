"""The reference receiver over real HTTP: every refusal has its own 4xx and leaves no trace."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anpr.config import AnprConfig
from anpr.exchange.envelope import Envelope, Party, SignedMessage, Signer, public_key_b64, signing_input
from anpr.exchange.transport import encode_batch
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ThreadReceiver

    EventFactory = Callable[..., PlateEvent]


def envelope(event: PlateEvent, receiver: str = "md-customs") -> Envelope:
    return Envelope(
        message_id=event.event_id,
        sender=Party(site="ua-porubne", country="UA"),
        receiver=receiver,
        sent_at=datetime.now(UTC),
        event=event,
    )


def signed(
    ex: Exchange, event: PlateEvent, key_id: str = "ua-test-1", clock: Callable[[], float] = time.time
) -> SignedMessage:
    return ex.signer(key_id, clock).sign(envelope(event))


def tampered(ex: Exchange, event: PlateEvent) -> bytes:
    m = signed(ex, event)
    return encode_batch([m.model_copy(update={"payload": m.payload.replace(event.plate, "BB9999XX")})])


def foreign_key(ex: Exchange, event: PlateEvent) -> bytes:
    # A key the receiver does not know, under a key id it does know.
    return encode_batch([Signer(Ed25519PrivateKey.generate(), "ua-test-1").sign(envelope(event))])


def not_an_envelope(ex: Exchange, event: PlateEvent) -> bytes:
    m = signed(ex, event)
    payload = m.payload.replace('"envelope_version":1', '"envelope_version":7')
    # Signed properly over the altered payload: authentic, but not an envelope version we speak.
    sig = m.signature
    assert sig is not None
    value = base64.b64encode(ex.key.sign(signing_input(payload, sig))).decode()
    return encode_batch([SignedMessage(payload=payload, signature=sig.model_copy(update={"value": value}))])


# name -> (body builder, content type, status, error code, index of the offending message)
CASES: dict[str, tuple[Callable[[Exchange, PlateEvent], bytes], str, int, str, int | None]] = {
    "malformed_json": (lambda ex, ev: b'{"messages": [{"payload": ', "application/json", 400, "malformed", None),
    "wrong_shape": (lambda ex, ev: b'{"messages": {"payload": "x"}}', "application/json", 400, "malformed", None),
    "no_messages": (lambda ex, ev: b'{"messages": []}', "application/json", 400, "malformed", None),
    "unsigned": (
        lambda ex, ev: encode_batch([SignedMessage(payload=envelope(ev).canonical())]),
        "application/json",
        401,
        "unsigned",
        0,
    ),
    "tampered_payload": (tampered, "application/json", 401, "bad_signature", 0),
    "signed_by_another_key": (foreign_key, "application/json", 401, "bad_signature", 0),
    "unknown_key_id": (
        lambda ex, ev: encode_batch([signed(ex, ev, key_id="ua-retired-0")]),
        "application/json",
        403,
        "unknown_key",
        0,
    ),
    "timestamp_too_old": (
        lambda ex, ev: encode_batch([signed(ex, ev, clock=lambda: time.time() - 360)]),
        "application/json",
        401,
        "timestamp_out_of_window",
        0,
    ),
    "timestamp_in_future": (
        lambda ex, ev: encode_batch([signed(ex, ev, clock=lambda: time.time() + 360)]),
        "application/json",
        401,
        "timestamp_out_of_window",
        0,
    ),
    "oversized_body": (
        lambda ex, ev: encode_batch([signed(ex, ev)] * 200),
        "application/json",
        413,
        "too_large",
        None,
    ),
    "too_many_messages": (
        lambda ex, ev: encode_batch([signed(ex, ev) for _ in range(11)]),
        "application/json",
        413,
        "too_many_messages",
        None,
    ),
    "not_json_content_type": (
        lambda ex, ev: encode_batch([signed(ex, ev)]),
        "text/plain",
        415,
        "unsupported_media_type",
        None,
    ),
    "invalid_envelope": (not_an_envelope, "application/json", 422, "invalid_envelope", 0),
    "wrong_receiver": (
        lambda ex, ev: encode_batch([ex.signer().sign(envelope(ev, receiver="ro-customs"))]),
        "application/json",
        422,
        "wrong_receiver",
        0,
    ),
    "one_bad_among_good": (
        lambda ex, ev: encode_batch([signed(ex, ev), *json_messages(tampered(ex, ev))]),
        "application/json",
        401,
        "bad_signature",
        1,
    ),
    "nonce_repeated_in_request": (
        lambda ex, ev: encode_batch([signed(ex, ev)] * 2),
        "application/json",
        409,
        "replay",
        1,
    ),
}


def json_messages(body: bytes) -> list[SignedMessage]:
    return [SignedMessage.model_validate(m) for m in json.loads(body)["messages"]]


@pytest.fixture
def receiver_cfg(exchange: Exchange) -> AnprConfig:
    return exchange.config(receiver={"max_body_bytes": 64 * 1024, "max_messages": 10, "max_skew_s": 300})


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_precise_and_stores_nothing(
    case: str,
    exchange: Exchange,
    receiver_cfg: AnprConfig,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    build, content_type, status, code, index = CASES[case]
    body = build(exchange, event_factory(1))
    before = exchange.all_keys()
    with thread_receiver(receiver_cfg):
        resp = httpx.post(exchange.url, content=body, headers={"content-type": content_type})
    assert (resp.status_code, resp.json()["error"]) == (status, code), resp.text
    assert resp.json()["index"] == index
    assert exchange.all_keys() == before  # no message, nonce, marker or counter written


def test_replayed_request_is_refused_and_stores_nothing_more(
    exchange: Exchange,
    receiver_cfg: AnprConfig,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    body = encode_batch([signed(exchange, event_factory(1))])
    with thread_receiver(receiver_cfg):
        first = httpx.post(exchange.url, content=body, headers={"content-type": "application/json"})
        after_first = {k: exchange.r.dump(k) for k in exchange.all_keys()}
        replay = httpx.post(exchange.url, content=body, headers={"content-type": "application/json"})
    assert first.status_code == 200 and first.json()["results"][0]["status"] == "stored"
    assert (replay.status_code, replay.json()["error"]) == (409, "replay")
    assert {k: exchange.r.dump(k) for k in exchange.all_keys()} == after_first
    assert exchange.inbox_ids() == [event_factory(1).event_id]


def test_resent_message_is_stored_once_and_answered_2xx(
    exchange: Exchange,
    receiver_cfg: AnprConfig,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    events = [event_factory(i) for i in range(3)]
    with thread_receiver(receiver_cfg):
        statuses = []
        for batch in (events[:2], events):  # a retry signs afresh: new nonce, same message ids
            resp = httpx.post(
                exchange.url,
                content=encode_batch([signed(exchange, ev) for ev in batch]),
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 200
            statuses.append([r["status"] for r in resp.json()["results"]])
    assert statuses == [["stored", "stored"], ["duplicate", "duplicate", "stored"]]
    assert exchange.inbox_ids() == [e.event_id for e in events]
    _, fields = exchange.r.xrange(exchange.keys.exchange_inbox, count=1)[0]
    assert set(fields) == {
        b"message_id",
        b"payload",
        b"alg",
        b"key_id",
        b"created",
        b"nonce",
        b"signature",
        b"received_at",
    }


def test_key_rotation_trusts_old_and_new_key(
    exchange: Exchange,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    new_key = Ed25519PrivateKey.generate()
    cfg = exchange.config(
        receiver={"trusted_keys": {"ua-test-1": public_key_b64(exchange.key), "ua-test-2": public_key_b64(new_key)}}
    )
    with thread_receiver(cfg):
        for i, signer in enumerate([exchange.signer(), Signer(new_key, "ua-test-2")]):
            resp = httpx.post(
                exchange.url,
                content=encode_batch([signer.sign(envelope(event_factory(i)))]),
                headers={"content-type": "application/json"},
            )
            assert resp.status_code == 200, resp.text
    assert len(exchange.inbox_ids()) == 2


def test_health_endpoint(
    exchange: Exchange, receiver_cfg: AnprConfig, thread_receiver: Callable[[AnprConfig], ThreadReceiver]
) -> None:
    with thread_receiver(receiver_cfg):
        resp = httpx.get(exchange.url.replace("/v1/messages", "/healthz"))
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_oversized_body_without_length_is_cut_off(
    exchange: Exchange,
    receiver_cfg: AnprConfig,
    thread_receiver: Callable[[AnprConfig], ThreadReceiver],
    event_factory: EventFactory,
) -> None:
    body = encode_batch([signed(exchange, event_factory(1))] * 200)

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse up front
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    before = exchange.all_keys()
    with thread_receiver(receiver_cfg):
        resp = httpx.post(exchange.url, content=chunks(), headers={"content-type": "application/json"})
    assert (resp.status_code, resp.json()["error"]) == (413, "too_large")
    assert exchange.all_keys() == before
