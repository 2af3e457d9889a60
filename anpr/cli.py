"""The `anpr` command line. Each command is a thin shell over one module.

Errors an operator can fix (a bad config, Redis unreachable, a port taken, a spool of another
destination) end every command the same way: one line naming what to fix, exit status 2; `-v` adds
the traceback.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

import typer
import yaml
from pydantic import ValidationError
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from anpr import __version__
from anpr.config import AnprConfig, ConfigError, PlatesConfig, load_config
from anpr.console.cli import register as register_console
from anpr.events import SpoolError
from anpr.exchange.cli import register as register_exchange
from anpr.history_cli import register as register_history


def _operator_message(exc: Exception) -> str | None:
    """The one line for an error the operator can fix; None for a bug (traceback)."""
    if isinstance(exc, RedisAuthenticationError):
        return f"Redis refused our credentials ({exc}): fix the password in redis.url or ANPR_REDIS__URL"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"Redis unreachable ({exc}): start it, or fix redis.url in the config (or ANPR_REDIS__URL)"
    if isinstance(exc, ConfigError | SpoolError | OSError):
        return " ".join(str(exc).split()) if isinstance(exc, OSError) else str(exc)
    return None


class _AnprGroup(TyperGroup):
    """Turns the errors an operator can fix into one line and exit status 2, for every subcommand."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _operator_message(exc)
            if message is None or ctx.params.get("verbose"):
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_AnprGroup, no_args_is_help=True, add_completion=False, help="Licence-plate recognition for border lanes."
)
models_app = typer.Typer(no_args_is_help=True, help="Model files: export, verify.")
app.add_typer(models_app, name="models")
register_exchange(app)
register_console(app)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (configs/*.yaml)")]
Backend = Literal["torch", "openvino"]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"anpr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs, and tracebacks on errors")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic logs every plugin and migration step at INFO: noise on every command that opens the store.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _console(stderr: bool = False) -> Console:
    """Full-width tables when output goes to a file or pipe (rich would wrap at 80 columns)."""
    return Console(stderr=stderr, width=None if Console().is_terminal else 160)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _config(path: Path | None, backend: Backend | None = None) -> AnprConfig:
    """The validated config; a ConfigError reaches the app's handler (one line, exit 2)."""
    cfg = load_config(path)
    if backend is not None:
        cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"backend": backend})})
    return cfg


@app.command()
def read(
    paths: Annotated[list[Path], typer.Argument(help="images or folders (searched recursively)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per image per line")] = False,
    backend: Annotated[Backend | None, typer.Option(help="detector backend (default: from config)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Read the plates in photos. Exit status 2 if any input could not be read (or a folder holds no image)."""
    from anpr.images import IMAGE_SUFFIXES, ImageError, decode_image, expand_inputs
    from anpr.recognize import PlateRecognizer

    cfg = _config(config, backend)
    # Inputs before models: a folder without images is reported at once, not after the models load.
    inputs: list[tuple[Path, str | None]] = []
    for given in paths:
        found = list(expand_inputs([given]))
        if given.is_dir() and not found:
            empty = f"no images in {given} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, in subfolders too)"
            typer.echo(f"error: {empty}", err=True)
            inputs.append((given, empty))
        inputs.extend((p, None) for p in found)
    recognizer = (
        PlateRecognizer.from_config(cfg, photos=True) if any(problem is None for _, problem in inputs) else None
    )
    console = _console()
    table = Table("image", "plate", "country", "confidence", "box", "error")
    failed = False
    for path, problem in inputs:
        results: list[Any] = []
        error: str | None = problem
        if recognizer is None or problem is not None:
            failed = True
        else:
            try:
                results = recognizer.recognize(decode_image(path))
            except ImageError as exc:
                error, failed = str(exc), True
        plates = [
            {
                "text": r.text,
                "confidence": round(r.confidence, 4),
                "box": r.box.as_int_list(),
                "country": r.country,
            }
            for r in results
        ]
        if as_json:
            print(json.dumps({"image": str(path), "plates": plates, "error": error}), flush=True)
            continue
        if error or not plates:
            table.add_row(str(path), "-", "", "", "", error or "no plate found")
        for p in plates:
            table.add_row(
                str(path),
                str(p["text"]),
                str(p["country"] or ""),
                f"{p['confidence']:.2f}",
                str(p["box"]),
                "",
            )
    if not as_json:
        console.print(table)
    if failed:
        raise typer.Exit(2)


@app.command("eval")
def eval_(
    folders: Annotated[list[Path], typer.Argument(help="labelled dataset folders (shared/datasets layout)")],
    limit: Annotated[int | None, typer.Option(help="first N samples of each folder")] = None,
    backend: Annotated[Backend | None, typer.Option(help="detector backend (default: from config)")] = None,
    worst: Annotated[int, typer.Option(help="how many of the worst errors to list")] = 10,
    countries: Annotated[
        str | None, typer.Option(help="comma-separated grammars, overriding the config; '' = generic rule only")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Score detection recall and plate accuracy (raw OCR vs grammar-corrected) on labelled folders."""
    from rich.progress import track

    from anpr.evaluate import Report, char_accuracy, load_samples, run
    from anpr.recognize import PlateRecognizer

    cfg = _config(config, backend)
    if countries is not None:
        try:
            plates = PlatesConfig(countries=[c for c in countries.upper().split(",") if c], correct=cfg.plates.correct)
        except ValidationError as exc:
            typer.echo(f"--countries: {exc.errors()[0]['msg']}", err=True)
            raise typer.Exit(2) from None
        cfg = cfg.model_copy(update={"plates": plates})
    recognizer = PlateRecognizer.from_config(cfg, photos=True)
    console = _console()
    summary = Table(
        "dataset",
        "images",
        "recall@.5",
        "recall@.3",
        "exact raw",
        "exact grammar",
        "chars raw",
        "chars grammar",
        "ms/image",
    )
    for folder in folders:
        report = Report(folder.name)
        total = len(load_samples(folder)) if limit is None else limit
        for outcome in track(run(recognizer, folder, limit), total=total, description=folder.name, console=console):
            report.outcomes.append(outcome)
        m = report.metrics()

        def fmt(v: float | int | None) -> str:
            return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

        summary.add_row(
            folder.name,
            *(
                fmt(m[k])
                for k in (
                    "images",
                    "recall_iou50",
                    "recall_iou30",
                    "exact_raw",
                    "exact_grammar",
                    "char_acc_raw",
                    "char_acc_grammar",
                )
            ),
            f"{m['ms_per_image']:.0f}",
        )
        errors = Table("image", "label", "read (grammar)", "raw OCR", "chars", title=f"{folder.name}: worst errors")
        for o in report.worst(worst):
            errors.add_row(
                o.sample.image.name,
                o.sample.plate,
                o.corrected or "-",
                o.raw or "-",
                f"{char_accuracy(o.corrected, o.sample.plate):.2f}",
            )
        console.print(errors)
    console.print(summary)


def _start_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2025-03-01T08:00:00Z") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@app.command()
def replay(
    videos: Annotated[list[Path], typer.Argument(help="recorded lane footage (video files or image folders)")],
    realtime: Annotated[bool, typer.Option(help="pace frames to the recording's speed")] = False,
    camera: Annotated[
        str | None, typer.Option(help="config camera the footage was shot by (lane, ROI, direction)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print each event as one JSON line, as stored in the stream")
    ] = False,
    start_time: Annotated[
        datetime | None,
        typer.Option(
            "--start-time",
            parser=_start_time,
            metavar="ISO",
            help="the replay clock starts here (no offset: UTC), each next recording where the previous ended. "
            "Event ids follow from it: the same start time again stores nothing twice. Default: now, so every "
            "replay records its vehicles anew",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay recordings through the live stage code into the events stream, then exit.

    Exit status 2 if an input failed, or events are left spooled (Redis unreachable) instead of written.
    """
    import time

    from rich.progress import Progress

    from anpr.capture import CaptureError
    from anpr.events import EventSink, Outcome
    from anpr.recognize import PlateRecognizer
    from anpr.replay import ReplayResult, check_input, frame_count, replay
    from anpr.schema import PlateEvent

    cfg = _config(config)
    errors: dict[Path, str] = {}
    for video in videos:  # before the models load: a wrong path or camera is reported in a second
        try:
            check_input(video, cfg, camera)
        except ValueError as exc:  # an unknown camera: the same for every input
            _fail(str(exc))
        except CaptureError as exc:
            errors[video] = str(exc)
            typer.echo(f"error: {exc}", err=True)
    todo = [v for v in videos if v not in errors]
    # The sink before the models too: a spool of another destination is refused at once.
    sink = EventSink.from_config(cfg.redis, cfg.events) if todo else None
    recognizer = PlateRecognizer.from_config(cfg) if todo else None
    out = _console()
    results: dict[Path, tuple[ReplayResult, float]] = {}

    def show(event: PlateEvent, outcome: Outcome) -> None:
        if as_json:
            print(event.model_dump_json(), flush=True)
        else:
            out.print(
                f"{event.best_seen:%H:%M:%S} {event.lane} {event.plate:<10} {event.country or '--'} "
                f"{event.direction.value:<7} conf {event.confidence:.2f} reads {event.reads}"
                + ("" if outcome in (Outcome.WRITTEN, Outcome.DUPLICATE) else f" ({outcome.value})")
            )

    clock = start_time
    with Progress(console=_console(stderr=True), transient=True) as progress:
        for video in todo:
            assert recognizer is not None and sink is not None
            task = progress.add_task(video.name, total=frame_count(video))
            started = time.perf_counter()
            try:
                result = replay(
                    video,
                    cfg,
                    recognizer,
                    sink,
                    camera=camera,
                    realtime=realtime,
                    start_time=clock,
                    on_event=show,
                    on_frame=lambda n, task=task: progress.advance(task, n),  # type: ignore[misc]
                )
            except CaptureError as exc:  # could not be opened after all (changed since the check)
                errors[video] = str(exc)
                typer.echo(f"error: {exc}", err=True)
                continue
            if result.error is not None:
                errors[video] = result.error
                typer.echo(f"error: {result.error} (events before it were kept)", err=True)
            if clock is not None and result.ended is not None:
                clock = result.ended + timedelta(seconds=1)
            results[video] = (result, time.perf_counter() - started)

    # Every input, in the order given; on stderr under --json, so stdout stays one event per line.
    summary = Table(
        "video", "frames", "fps", "detections", "OCR calls", "events", "written", "already stored", "spooled",
        "plates", "error",
    )  # fmt: skip
    for video in videos:
        if video not in results:
            summary.add_row(video.name, *["-"] * 9, errors[video])
            continue
        result, took = results[video]
        st, n = result.stats, result.outcomes
        summary.add_row(
            video.name,
            str(result.frames),
            f"{result.frames / took:.1f}" if took > 0 else "-",
            str(st.detections),
            str(st.ocr_calls),
            str(len(result.events)),
            str(n[Outcome.WRITTEN]),
            str(n[Outcome.DUPLICATE]),
            str(n[Outcome.SPOOLED]),
            " ".join(e.plate for e in result.events),
            result.error or "",
        )
    (_console(stderr=True) if as_json else out).print(summary)
    failed = bool(errors)
    if sink is not None:
        sink.drain()
        if sink.stats.refused:
            typer.echo(f"error: {sink.stats.refused} events LOST: Redis unreachable and the spool full", err=True)
            failed = True
        if waiting := len(sink.spool.files()):
            typer.echo(
                f"error: {waiting} events spooled, not written: Redis {sink.target} unreachable. They wait in "
                f"{sink.spool.directory} for the next command with this Redis and prefix",
                err=True,
            )
            failed = True
    if failed:
        raise typer.Exit(2)


@app.command()
def run(
    box: Annotated[
        str | None,
        typer.Option(help="run only the cameras of this box (cameras[].box); default: runtime.box, else all"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run every camera of the site (or of this box) live: workers, events stream, health on the configured port."""
    from anpr.run import run_site

    cfg = _config(config)
    if box is not None:
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"box": box})})
    try:
        run_site(cfg)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


events_app = typer.Typer(no_args_is_help=True, help="Plate events: the live stream, and the stored history.")
app.add_typer(events_app, name="events")
register_history(app, events_app)


@events_app.command("tail")
def events_tail(
    count: Annotated[int, typer.Option("--count", "-n", help="how many recent events to show first")] = 10,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print the newest events of the stream (JSON lines), optionally following it."""
    from anpr.keys import Keys
    from anpr.redis_client import connect

    cfg = _config(config)
    client: Any = connect(cfg.redis)  # redis-py's stubs type replies as unions of everything
    stream = Keys(cfg.redis.prefix).events
    entries = list(reversed(client.xrevrange(stream, count=count))) if count else []
    last = entries[-1][0] if entries else b"$"
    for _, fields in entries:
        print(fields[b"event"].decode(), flush=True)
    while follow:
        for _, batch in client.xread({stream: last}, block=1000, count=100) or []:
            for entry_id, fields in batch:
                print(fields[b"event"].decode(), flush=True)
                last = entry_id


config_app = typer.Typer(no_args_is_help=True, help="Configuration files: check one, print the schema.")
app.add_typer(config_app, name="config")

_SECRET_KEYS = ("password", "secret", "token")  # a value under such a key is masked; *_file paths are not secrets


def _mask_url(value: str) -> str:
    """The URL with its password masked (redis://:***@host, rtsp://user:***@cam)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or parts.password is None:
        return value
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}").geturl()


def _masked(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _masked(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_masked(v, key) for v in node]
    if isinstance(node, str):
        if any(s in key.lower() for s in _SECRET_KEYS) and not key.endswith("_file"):
            return "***"
        return _mask_url(node)
    return node


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="YAML config to validate (ANPR_* variables apply on top)")],
) -> None:
    """Validate a config and print the effective settings as YAML, passwords masked. Exit 2 if invalid."""
    cfg = load_config(file)
    typer.echo(f"# {file}: valid. Effective settings (defaults, the file, ANPR_* variables); secrets masked", err=True)
    typer.echo(yaml.safe_dump(_masked(cfg.model_dump(mode="json")), sort_keys=False, allow_unicode=True), nl=False)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the whole configuration (every key, its type, default and meaning)."""
    typer.echo(json.dumps(AnprConfig.model_json_schema(), indent=2))


@models_app.command("export")
def models_export(config: ConfigOpt = None) -> None:
    """Generate the OpenVINO export of the detector into the cache dir (otherwise done on first use)."""
    from anpr.detect import openvino_export

    typer.echo(str(openvino_export(_config(config).detector)))


@models_app.command("verify")
def models_verify(config: ConfigOpt = None) -> None:
    """Check every model file against its pinned sha256."""
    from anpr.config import MODELS_DIR
    from anpr.models import (
        EASYOCR_FILES,
        PINNED_BY_NAME,
        ModelError,
        detector_weights,
        easyocr_model_dir,
        verify_model_file,
    )

    cfg = _config(config)
    try:
        typer.echo(f"ok {detector_weights(cfg.detector.weights)}")
        typer.echo(f"ok {easyocr_model_dir()}")
        for name in PINNED_BY_NAME.keys() - EASYOCR_FILES.keys():  # EasyOCR's live in its package
            typer.echo(f"ok {verify_model_file(MODELS_DIR / name)}")
    except ModelError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
