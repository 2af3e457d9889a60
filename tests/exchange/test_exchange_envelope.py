"""Envelope, canonical JSON and signature; and the protocol document that partners build from."""

from __future__ import annotations

import base64
import json
import re
import runpy
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from anpr.exchange.envelope import (
    Envelope,
    Party,
    PlateImage,
    Rejected,
    Signature,
    SignedMessage,
    Signer,
    Verifier,
    canonical_json,
    public_key_b64,
    signing_input,
)
from anpr.exchange.transport import parse_retry_after
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    EventFactory = Callable[..., PlateEvent]

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "exchange-protocol.md").read_text()


def doc_block(marker: str) -> str:
    """The fenced block right after `<!-- marker -->` in the protocol document."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", DOC, re.S)
    assert match, f"no block after <!-- {marker} --> in docs/exchange-protocol.md"
    return match.group(1)


def make_envelope(event: PlateEvent, **update: object) -> Envelope:
    fields: dict[str, object] = {
        "message_id": event.event_id,
        "sender": Party(site="ua-porubne", country="UA"),
        "receiver": "md-customs",
        "sent_at": datetime(2025, 6, 1, 8, 0, 5, tzinfo=UTC),
        "event": event,
    }
    return Envelope.model_validate(fields | update)


def test_canonical_json_sorts_keys_and_keeps_utf8() -> None:
    obj = {"b": 1, "a": {"d": "Жовква", "c": [1.5, None, True]}}
    assert canonical_json(obj) == '{"a":{"c":[1.5,null,true],"d":"Жовква"},"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_envelope_round_trips_to_the_same_bytes(event_factory: EventFactory) -> None:
    env = make_envelope(event_factory(7), plate_image=PlateImage(data=base64.b64encode(b"jpeg").decode()))
    assert Envelope.model_validate_json(env.canonical()).canonical() == env.canonical()


@pytest.mark.parametrize(
    ("update", "error"),
    [
        ({"message_id": "other"}, "message_id must equal event.event_id"),
        ({"envelope_version": 2}, "envelope_version"),
        ({"sender": {"site": "x", "country": "ukr"}}, "country"),
        ({"plate_image": {"url": "https://x", "data": "eA=="}}, "exactly one"),
        ({"plate_image": {}}, "exactly one"),
        ({"extra": 1}, "extra"),
        ({"sent_at": datetime(2025, 6, 1, 8, 0, 5)}, "UTC offset"),
    ],
)
def test_envelope_refuses(event_factory: EventFactory, update: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        make_envelope(event_factory(1), **update)


def test_signature_covers_context_key_time_nonce_and_payload(event_factory: EventFactory) -> None:
    key = Ed25519PrivateKey.generate()
    message = Signer(key, "k1", clock=lambda: 1_700_000_000.9).sign(make_envelope(event_factory(1)))
    sig = message.signature
    assert sig is not None and (sig.alg, sig.key_id, sig.created) == ("ed25519", "k1", 1_700_000_000)
    signed_bytes = f"anpr-exchange/1\nk1\n1700000000\n{sig.nonce}\n{message.payload}".encode()
    key.public_key().verify(base64.b64decode(sig.value), signed_bytes)  # raises if not
    verifier = Verifier.from_config({"k1": public_key_b64(key)}, "md-customs", max_skew_s=300)
    env, _ = verifier.verify(message, now=1_700_000_100)
    assert env.message_id == event_factory(1).event_id
    # Every field is covered: changing any one breaks the signature.
    for change in ({"created": 1_700_000_001}, {"nonce": "A" * 22}, {"key_id": "k2"}):
        forged = message.model_copy(update={"signature": sig.model_copy(update=change)})
        trusting_k2 = Verifier.from_config({"k1": public_key_b64(key), "k2": public_key_b64(key)}, "md-customs", 300)
        with pytest.raises(Rejected, match="bad_signature"):
            trusting_k2.verify(forged, now=1_700_000_000)


def test_each_attempt_gets_a_fresh_nonce(event_factory: EventFactory) -> None:
    signer = Signer(Ed25519PrivateKey.generate(), "k1")
    env = make_envelope(event_factory(1))
    nonces = {m.signature.nonce for m in (signer.sign(env) for _ in range(50)) if m.signature}
    assert len(nonces) == 50


def test_protocol_document_test_vector_verifies() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert doc_block("test-vector:public-key") == public_key_b64(key)
    payload = doc_block("test-vector:payload")
    Envelope.model_validate_json(payload)  # the example is a valid envelope
    sig = Signature(
        alg="ed25519", key_id="ua-porubne-2025-06", created=1748764805, nonce="3q2-7wAAAAAAAAAAAAAAAA", value="-"
    )
    expected = base64.b64encode(key.sign(signing_input(payload, sig))).decode()
    assert doc_block("test-vector:signature") == expected
    verifier = Verifier.from_config({"ua-porubne-2025-06": public_key_b64(key)}, "md-customs", 300)
    message = SignedMessage(payload=payload, signature=sig.model_copy(update={"value": expected}))
    verifier.verify(message, now=1748764805)


def test_protocol_document_schemas_match_the_code() -> None:
    """If this fails: run `.venv/bin/python scripts/exchange_schema.py` and update the document."""
    schemas = runpy.run_path(str(REPO / "scripts" / "exchange_schema.py"))["schemas"]()
    assert json.loads(doc_block("schema:request")) == schemas["request"]
    assert json.loads(doc_block("schema:payload")) == schemas["payload"]


def test_protocol_document_lists_every_refusal() -> None:
    from anpr.exchange.receiver import HTTP_STATUS

    for code, status in HTTP_STATUS.items():
        assert re.search(rf"\| {status} \| `{code}` \|", DOC), f"{status} {code} missing from the checks table"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("soon", None),
        (format_datetime(datetime.fromtimestamp(1_700_000_030, UTC), usegmt=True), 30.0),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1_700_000_000) == expected
