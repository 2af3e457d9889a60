"""The configuration tree is strict: typos are errors naming the key; every shipped file loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from anpr.config import REPO_ROOT, ConfigError, load_config

CONFIG_FILES = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_every_shipped_config_loads(path: Path) -> None:
    load_config(path)


def test_configs_folder_is_not_empty() -> None:
    assert CONFIG_FILES, "configs/ must hold at least one config"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("detector:\n  imgsize: 640\n", "unknown key 'detector.imgsize'"),
        ("detectr:\n  imgsz: 640\n", "unknown key 'detectr'"),
        ("detector:\n  imgsz: 100\n", "detector.imgsz"),
        ("detector:\n  backend: tensorrt\n", "detector.backend"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("detector: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("detector:\n  backend: torch\n  imgsz: 320\n")
    monkeypatch.setenv("ANPR_DETECTOR__BACKEND", "openvino")
    cfg = load_config(path)
    assert cfg.detector.backend == "openvino"
    assert cfg.detector.imgsz == 320
