"""The exchange envelope, its canonical serialisation and its signature.

One *message* carries one plate event to the partner:

    {"payload": "<canonical JSON of the Envelope>",
     "signature": {"alg": "ed25519", "key_id": ..., "created": <unix s>, "nonce": ..., "value": <base64>}}

The payload travels as a string and the signature covers exactly its UTF-8 bytes, so a verifier never
re-serialises JSON (number formatting differs between languages; re-serialising is where signature
schemes break). The sender still writes the payload canonically (sorted keys, no whitespace, UTF-8)
so the same envelope always gives the same bytes.

Signature scheme: **Ed25519** (not HMAC-SHA256), because

- the partner holds only our *public* key: a breach of their side cannot forge messages from ours,
  and a stored message is evidence of who sent it (with HMAC both sides hold the secret, so either
  could have written any message);
- public keys need no secret channel to exchange, and rotation is a key id: the receiver trusts
  several (key id -> public key) pairs at once while the sender switches;
- it is fast enough by far (tens of microseconds to sign, ~100 us to verify) and has no per-signature
  randomness to get wrong (unlike ECDSA).

`created` and `nonce` are signed with the payload: the receiver refuses a message outside its clock
window, and a nonce it has already seen (a replay). The sender signs afresh on every attempt, so a
retry is never mistaken for a replay; it is recognised by its message id instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from anpr.config import KEY_ID_PATTERN, ConfigError
from anpr.schema import PlateEvent, UtcDatetime

ENVELOPE_VERSION: Literal[1] = 1
# Domain separation: a signature made for this protocol cannot be replayed as one for anything else.
SIGNING_CONTEXT = "anpr-exchange/1"
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"

Clock = Callable[[], float]


def canonical_json(obj: Any) -> str:
    """Sorted keys, no insignificant whitespace, non-ASCII kept as UTF-8, no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Party(_Wire):
    site: str = Field(min_length=1, max_length=64)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class PlateImage(_Wire):
    """The best plate crop: inline (base64 JPEG) or a URL the partner may fetch; exactly one of them."""

    content_type: Literal["image/jpeg"] = "image/jpeg"
    data: str | None = Field(default=None, description="base64 of the JPEG bytes")
    url: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PlateImage:
        if (self.data is None) == (self.url is None):
            raise ValueError("plate_image needs exactly one of 'data' and 'url'")
        return self


class Envelope(_Wire):
    """What the partner receives about one event. `message_id` is the event id: re-sending is idempotent."""

    envelope_version: Literal[1] = ENVELOPE_VERSION
    message_id: str = Field(min_length=1, max_length=200)
    sender: Party
    receiver: str = Field(min_length=1, max_length=64)
    sent_at: UtcDatetime
    event: PlateEvent
    plate_image: PlateImage | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Envelope:
        if self.message_id != self.event.event_id:
            raise ValueError("message_id must equal event.event_id")
        # A time without offset is ambiguous across a border (and cannot be compared with ours).
        ev = self.event
        if any(t.tzinfo is None for t in (self.sent_at, ev.first_seen, ev.last_seen, ev.best_seen)):
            raise ValueError("times must carry a UTC offset (RFC 3339, e.g. 2025-06-01T08:00:00Z)")
        return self

    def canonical(self) -> str:
        return canonical_json(self.model_dump(mode="json"))


class Signature(_Wire):
    alg: Literal["ed25519"]
    key_id: str = Field(pattern=KEY_ID_PATTERN)
    created: int = Field(ge=0, description="unix time in seconds when this attempt was signed")
    nonce: str = Field(pattern=NONCE_PATTERN)
    value: str = Field(min_length=1, max_length=200, description="base64 of the 64-byte signature")


class SignedMessage(_Wire):
    payload: str = Field(description="the Envelope as canonical JSON text; the signature covers its UTF-8 bytes")
    # Optional only so that an unsigned message parses and can be refused as *unsigned* (not malformed).
    signature: Signature | None = None


def signing_input(payload: str, signature_fields: Signature) -> bytes:
    """The exact bytes signed: context, key id, time and nonce, each on its own line, then the payload."""
    s = signature_fields
    return f"{SIGNING_CONTEXT}\n{s.key_id}\n{s.created}\n{s.nonce}\n{payload}".encode()


class Rejected(Exception):
    """A message the receiver must refuse; `code` is the machine-readable reason on the wire."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Signer:
    """Signs envelopes with our private key under a key id the partner knows."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str, clock: Clock = time.time) -> None:
        self._key = key
        self._key_id = key_id
        self._clock = clock

    @classmethod
    def from_pem_file(cls, path: Path, key_id: str) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load signing key {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 private key")
        return cls(key, key_id)

    def sign(self, envelope: Envelope) -> SignedMessage:
        return self.sign_payload(envelope.canonical())

    def sign_payload(self, payload: str) -> SignedMessage:
        """Sign an envelope already serialised canonically (a sender retrying signs the same text again)."""
        unsigned = Signature(
            alg="ed25519",
            key_id=self._key_id,
            created=int(self._clock()),
            nonce=secrets.token_urlsafe(16),
            value="-",
        )
        value = base64.b64encode(self._key.sign(signing_input(payload, unsigned))).decode("ascii")
        return SignedMessage(payload=payload, signature=unsigned.model_copy(update={"value": value}))


class Verifier:
    """Checks a message's signature, key and clock window, and parses its envelope.

    Pure (no storage): the receiver checks every message of a request before storing any of them.
    Replays are refused later, atomically with storing, because the nonce cache lives in Redis.
    """

    def __init__(self, trusted: Mapping[str, Ed25519PublicKey], receiver: str, max_skew_s: float) -> None:
        self._trusted = dict(trusted)
        self._receiver = receiver
        self._max_skew_s = max_skew_s

    @classmethod
    def from_config(cls, trusted_keys: Mapping[str, str], receiver: str, max_skew_s: float) -> Verifier:
        if not trusted_keys:
            raise ConfigError("receiver.trusted_keys is empty: no message could ever be accepted")
        return cls({kid: public_key_from_b64(b64) for kid, b64 in trusted_keys.items()}, receiver, max_skew_s)

    def verify(self, message: SignedMessage, now: float) -> tuple[Envelope, Signature]:
        """The envelope and signature of an authentic, fresh message addressed to us; `Rejected` otherwise."""
        sig = message.signature
        if sig is None:
            raise Rejected("unsigned", "message has no signature")
        key = self._trusted.get(sig.key_id)
        if key is None:
            raise Rejected("unknown_key", f"key id {sig.key_id!r} is not trusted")
        try:
            key.verify(base64.b64decode(sig.value, validate=True), signing_input(message.payload, sig))
        except (InvalidSignature, binascii.Error):
            raise Rejected("bad_signature", "signature does not match the payload") from None
        # Checked after the signature, so a time complaint is only ever made about an authentic message.
        if abs(now - sig.created) > self._max_skew_s:
            raise Rejected(
                "timestamp_out_of_window",
                f"signed at {sig.created}, receiver time {int(now)}, window ±{self._max_skew_s:g} s",
            )
        try:
            envelope = Envelope.model_validate_json(message.payload)
        except ValueError as exc:
            raise Rejected("invalid_envelope", _first_error(exc)) from None
        if envelope.receiver != self._receiver:
            raise Rejected("wrong_receiver", f"addressed to {envelope.receiver!r}, this is {self._receiver!r}")
        return envelope, sig


def _first_error(exc: ValueError) -> str:
    lines = str(exc).splitlines()
    return " ".join(line.strip() for line in lines[:3])[:300]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise ConfigError(f"not a base64 raw 32-byte Ed25519 public key: {text!r}") from None


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The form receivers list in `trusted_keys`."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, the same file `openssl genpkey -algorithm ed25519` writes."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
