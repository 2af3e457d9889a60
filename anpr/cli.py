"""The `anpr` command line. Each command is a thin shell over one module."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from anpr.config import AnprConfig, ConfigError, PlatesConfig, load_config
from anpr.console.cli import register as register_console
from anpr.exchange.cli import register as register_exchange
from anpr.history_cli import register as register_history

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Licence-plate recognition for border lanes.")
models_app = typer.Typer(no_args_is_help=True, help="Model files: export, verify.")
app.add_typer(models_app, name="models")
register_exchange(app)
register_console(app)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (configs/*.yaml)")]
Backend = Literal["torch", "openvino"]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic logs every plugin and migration step at INFO: noise on every command that opens the store.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _console(stderr: bool = False) -> Console:
    """Full-width tables when output goes to a file or pipe (rich would wrap at 80 columns)."""
    return Console(stderr=stderr, width=None if Console().is_terminal else 160)


def _config(path: Path | None, backend: Backend | None = None) -> AnprConfig:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
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
    """Read the plates in photos. Exit status 2 if any input could not be read."""
    from anpr.images import ImageError, decode_image, expand_inputs
    from anpr.recognize import PlateRecognizer

    recognizer = PlateRecognizer.from_config(_config(config, backend))
    console = _console()
    table = Table("image", "plate", "country", "confidence", "box", "error")
    failed = False
    for path in expand_inputs(paths):
        try:
            results = recognizer.recognize(decode_image(path))
            error = None
        except ImageError as exc:
            results, error, failed = [], str(exc), True
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
    recognizer = PlateRecognizer.from_config(cfg)
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


@app.command()
def replay(
    videos: Annotated[list[Path], typer.Argument(help="recorded lane footage (video files or image folders)")],
    realtime: Annotated[bool, typer.Option(help="pace frames to the recording's speed")] = False,
    camera: Annotated[
        str | None, typer.Option(help="config camera the footage was shot by (lane, ROI, direction)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print each event as one JSON line")] = False,
    config: ConfigOpt = None,
) -> None:
    """Replay recordings through the live stage code into the events stream, then exit."""
    import time

    from rich.progress import Progress

    from anpr.capture import CaptureError
    from anpr.events import EventSink
    from anpr.recognize import PlateRecognizer
    from anpr.replay import camera_for, frame_count, replay
    from anpr.schema import PlateEvent

    cfg = _config(config)
    try:
        camera_for(videos[0], cfg, camera)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    recognizer = PlateRecognizer.from_config(cfg)
    sink = EventSink.from_config(cfg.redis, cfg.events)
    out = _console()
    summary = Table("video", "frames", "fps", "detections", "OCR calls", "events", "plates")
    failed = False

    def show(event: PlateEvent) -> None:
        if as_json:
            print(event.model_dump_json(), flush=True)
        else:
            out.print(
                f"{event.best_seen:%H:%M:%S} {event.lane} {event.plate:<10} {event.country or '--'} "
                f"{event.direction.value:<7} conf {event.confidence:.2f} reads {event.reads}"
            )

    with Progress(console=_console(stderr=True), transient=True) as progress:
        for video in videos:
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
                    on_event=show,
                    on_frame=lambda task=task: progress.advance(task),  # type: ignore[misc]
                )
            except CaptureError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed = True
                continue
            took = time.perf_counter() - started
            st = result.stats
            summary.add_row(
                video.name,
                str(st.frames),
                f"{st.frames / took:.1f}",
                str(st.detections),
                str(st.ocr_calls),
                str(len(result.events)),
                " ".join(e.plate for e in result.events),
            )
    if not as_json:
        out.print(summary)
    if sink.stats.refused:
        typer.echo(f"error: {sink.stats.refused} events could not be stored (Redis away, spool full)", err=True)
        failed = True
    if failed:
        raise typer.Exit(2)


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run every camera of the site live (workers, events stream, health on the configured port)."""
    from anpr.run import run_site

    try:
        run_site(_config(config))
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
