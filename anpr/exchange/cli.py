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
    """Add `publisher` (a group: `publisher dead-letters list|retry`), `exchange-receiver`, `exchange-ingest`,
    `exchange-matcher` and `exchange-keygen` to `app`."""

    publisher_app = typer.Typer(
        help="Deliver plate events to the partner customs service (signed, each once).", add_completion=False
    )
    dead_app = typer.Typer(help="Events the partner refused (or that were malformed): list them, send them again.")
    publisher_app.add_typer(dead_app, name="dead-letters")
    app.add_typer(publisher_app, name="publisher")

    @publisher_app.callback(invoke_without_command=True)
    def publisher(
        ctx: typer.Context,
        config: ConfigOpt = None,
        burst: Annotated[
            bool, typer.Option("--burst", help="deliver everything pending, then exit (1 if any was not delivered)")
        ] = False,
        check: Annotated[
            bool,
            typer.Option(
                "--check",
                help="exit 0 if a publisher reports health, delivers and is not paused; else 1 with the reasons",
            ),
        ] = False,
    ) -> None:
        """Deliver plate events to the partner customs service (signed, each once)."""
        ctx.obj = config
        if ctx.invoked_subcommand is not None:
            return
        from anpr.exchange.publisher import DeliveryPaused, Publisher, serve_metrics
        from anpr.exchange.publisher import check as check_health

        cfg = _load(config)
        if check:
            healthy, report = check_health(cfg)
            typer.echo(json.dumps(report, indent=2))
            for problem in report["problems"]:
                typer.echo(f"publisher unhealthy: {problem}", err=True)
            raise typer.Exit(0 if healthy else 1)
        # One INFO line per HTTP request is noise at 10 requests/s; failures are logged by the publisher.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            pub = Publisher.from_config(cfg, _stop_on_signals())
        except ConfigError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        try:
            if cfg.publisher.metrics_port and not burst:
                try:
                    serve_metrics(cfg)
                except OSError as exc:
                    typer.echo(
                        f"cannot serve /metrics on {cfg.publisher.metrics_host}:{cfg.publisher.metrics_port} ({exc}); "
                        "set publisher.metrics_port to a free port, or 0 for none",
                        err=True,
                    )
                    raise typer.Exit(2) from None
            pub.run(burst=burst)
        except DeliveryPaused as exc:
            typer.echo(f"delivery paused, configuration fault: {exc}; nothing dead-lettered, events kept", err=True)
            raise typer.Exit(1) from None
        finally:
            pub.close()
        if burst and pub.dead_lettered:
            typer.echo(
                f"{pub.dead_lettered} events dead-lettered in this run; see `anpr publisher dead-letters list`",
                err=True,
            )
            raise typer.Exit(1)

    @dead_app.command("list")
    def dead_letters_list(
        ctx: typer.Context,
        config: ConfigOpt = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="one JSON object per line, with the original fields")
        ] = False,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most this many, oldest first")] = None,
    ) -> None:
        """Dead letters, oldest first: id, when, event and why (use the id with `retry`)."""
        from anpr.exchange.publisher import dead_letters
        from anpr.keys import Keys
        from anpr.redis_client import connect

        cfg = _publisher_config(ctx, config)
        r = connect(cfg.redis)
        try:
            found = dead_letters(r, Keys(cfg.redis.prefix), limit)
        finally:
            r.close()
        for d in found:
            if as_json:
                typer.echo(json.dumps(d.as_json(), ensure_ascii=False))
            else:
                ev = d.event or {}
                what = f"{ev.get('plate', '?')} {ev.get('event_id', '')}".strip() if ev else "(malformed entry)"
                typer.echo(f"{d.id}  {d.dead_at}  {what}  {d.reason}")
        if not as_json:
            typer.echo(f"{len(found)} dead letters", err=True)

    @dead_app.command("retry")
    def dead_letters_retry(
        ctx: typer.Context,
        ids: Annotated[
            list[str] | None, typer.Argument(help="dead-letter ids (from `list`)", show_default=False)
        ] = None,
        config: ConfigOpt = None,
        all_: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
    ) -> None:
        """Queue dead letters for the publisher to send again; each is sent once, however often this runs."""
        from anpr.exchange.publisher import dead_letters, redrive
        from anpr.keys import Keys
        from anpr.redis_client import connect

        if all_ == bool(ids):
            typer.echo("give dead-letter ids, or --all (not both)", err=True)
            raise typer.Exit(2)
        cfg = _publisher_config(ctx, config)
        keys = Keys(cfg.redis.prefix)
        r = connect(cfg.redis)
        try:
            wanted = [d.id for d in dead_letters(r, keys)] if all_ else list(ids or [])
            done, missing = redrive(r, keys, wanted)
        finally:
            r.close()
        typer.echo(
            f"re-queued {len(done)} dead letters; the running publisher sends them (or `anpr publisher --burst`)"
        )
        for m in missing:
            typer.echo(f"{m}: no such dead letter (already re-queued?)", err=True)
        raise typer.Exit(1 if missing else 0)

    def _publisher_config(ctx: typer.Context, config: Path | None) -> AnprConfig:
        """`--config` after the subcommand, else the one given to `anpr publisher` (inherited as ctx.obj)."""
        inherited = ctx.obj if isinstance(ctx.obj, Path) else None
        return _load(config if config is not None else inherited)

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
