"""Command-line entry points of the exchange, registered on the main `anpr` typer app.

Heavy imports (uvicorn, cryptography, httpx) stay inside the commands so `anpr --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from anpr.config import AnprConfig, ConfigError, load_config

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (configs/*.yaml)")]


def _load(path: Path | None) -> AnprConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT finish the current step and exit; unacknowledged work stays pending in Redis."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def register(app: typer.Typer) -> None:
    """Add `publisher`, `exchange-receiver`, `exchange-ingest`, `exchange-matcher`, `exchange-keygen` to `app`."""

    @app.command("publisher")
    def publisher(
        config: ConfigOpt = None,
        burst: Annotated[bool, typer.Option("--burst", help="deliver everything pending, then exit")] = False,
        check: Annotated[
            bool, typer.Option("--check", help="exit 0 if a publisher reported health recently, else 1")
        ] = False,
    ) -> None:
        """Deliver plate events to the partner customs service (signed, each once)."""
        from anpr.exchange.publisher import Publisher
        from anpr.exchange.publisher import check as check_health

        cfg = _load(config)
        if check:
            healthy, report = check_health(cfg)
            typer.echo(json.dumps(report, indent=2))
            raise typer.Exit(0 if healthy else 1)
        # One INFO line per HTTP request is noise at 10 requests/s; failures are logged by the publisher.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            pub = Publisher.from_config(cfg, _stop_on_signals())
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        try:
            pub.run(burst=burst)
        finally:
            pub.close()

    @app.command("exchange-receiver")
    def exchange_receiver(config: ConfigOpt = None) -> None:
        """Run the reference partner receiver (HTTP(S), verifies and stores partner messages)."""
        from anpr.exchange.receiver import serve

        try:
            serve(_load(config))
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None

    @app.command("exchange-ingest")
    def exchange_ingest(
        config: ConfigOpt = None,
        burst: Annotated[bool, typer.Option("--burst", help="ingest what has landed, then exit")] = False,
    ) -> None:
        """Check and store messages the partner XADDed into our landing stream (Redis transport)."""
        from anpr.exchange.receiver import LandingIngest
        from anpr.redis_client import connect

        cfg = _load(config)
        try:
            ingest = LandingIngest(cfg, connect(cfg.redis), _stop_on_signals())
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        ingest.run(burst=burst)

    @app.command("exchange-matcher")
    def exchange_matcher(
        config: ConfigOpt = None,
        burst: Annotated[bool, typer.Option("--burst", help="match what is there, raise due alerts, exit")] = False,
    ) -> None:
        """Pair the partner's exit events with our entry events; write matches and alerts."""
        from anpr.exchange.matching import MatcherWorker
        from anpr.redis_client import connect

        cfg = _load(config)
        MatcherWorker(cfg, connect(cfg.redis), stop=_stop_on_signals()).run(burst=burst)

    @app.command("exchange-keygen")
    def exchange_keygen(
        out: Annotated[Path, typer.Argument(help="where to write the private key (PEM, mode 0600)")],
    ) -> None:
        """Create an Ed25519 signing key; prints the public key for the partner's trusted_keys."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from anpr.exchange.envelope import private_key_pem, public_key_b64

        if out.exists():
            typer.echo(f"{out} exists; refusing to overwrite a key", err=True)
            raise typer.Exit(2)
        key = Ed25519PrivateKey.generate()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600)
        out.write_bytes(private_key_pem(key))
        typer.echo(public_key_b64(key))
