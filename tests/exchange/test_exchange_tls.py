"""HTTPS end to end: the receiver CLI serving TLS, the publisher verifying it against a given CA file."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anpr.exchange.publisher import Publisher
from anpr.exchange.transport import HttpTransport, TransientError
from anpr.redis_client import connect
from anpr.schema import PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ProcessReceiver

    EventFactory = Callable[..., PlateEvent]


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anpr test receiver")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "tls.crt", tmp / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.mark.slow
def test_delivery_over_https_verifies_the_receiver(
    exchange: Exchange, process_receiver: Callable[..., ProcessReceiver], event_factory: EventFactory, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    https = exchange.url.replace("http://", "https://")
    cfg_path = exchange.write_config(
        receiver={"tls_certfile": str(cert), "tls_keyfile": str(key)}, publisher={"url": https, "ca_file": str(cert)}
    )
    process_receiver(cfg_path, exchange.receiver_port, scheme="https")
    events = [event_factory(i) for i in range(10)]
    exchange.add_events(events)

    # Without the partner's CA the certificate is refused (a transient error: fixed by configuration).
    untrusting = exchange.config(publisher={"url": https, "request_timeout_s": 2.0})
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        HttpTransport(untrusting.publisher).send([])

    cfg = exchange.config(publisher={"url": https, "ca_file": str(cert)})
    pub = Publisher(cfg, connect(cfg.redis), HttpTransport(cfg.publisher), exchange.signer())
    pub.run(burst=True)
    pub.close()
    assert sorted(exchange.inbox_ids()) == sorted(e.event_id for e in events)
