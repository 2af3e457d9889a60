"""The configuration tree is strict: typos are errors naming the key; every shipped file loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from anpr.cli import app
from anpr.config import REPO_ROOT, AnprConfig, ConfigError, load_config

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


def test_misspelt_env_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANPR_DETECTR__BACKEND", "torch")
    with pytest.raises(ConfigError, match="environment variable ANPR_DETECTR__BACKEND: no config section 'detectr'"):
        load_config()
    # Variables without a section separator belong to other tools (the tests' ANPR_TEST_REDIS_URL...).
    monkeypatch.delenv("ANPR_DETECTR__BACKEND")
    monkeypatch.setenv("ANPR_TEST_SOMETHING", "1")
    load_config()


def test_bad_env_value_is_reported_as_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("detector:\n  imgsz: 640\n")
    monkeypatch.setenv("ANPR_DETECTOR__IMGSZ", "100")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        "invalid configuration in environment variable ANPR_DETECTOR__IMGSZ: "
        "detector.imgsz: Input should be a multiple of 32 (got '100')"
    )
    monkeypatch.setenv("ANPR_DETECTOR__BACKEN", "torch")  # a misspelt key inside a real section
    with pytest.raises(
        ConfigError, match=r"environment variable ANPR_DETECTOR__BACKEN: unknown key 'detector\.backen'"
    ):
        load_config(path)


def test_config_errors_point_to_help_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("detector:\n  imgsize: 640\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "configs/README" not in str(err.value) and "`anpr config schema`" in str(err.value)
    assert "\n" not in str(err.value)  # one problem, one line
    assert CliRunner().invoke(app, ["config", "schema"]).exit_code == 0


def test_config_check_prints_effective_settings_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "redis: {url: 'redis://:s3cret@10.0.0.5:6379/2', prefix: lane}\n"
        "notify: {mqtt: {password: hunter2}, webhooks: [{name: ops, url: 'https://u:tok@ops.example/hook', "
        f"secret_file: {tmp_path / 'hook.secret'}}}]}}\n"
        "cameras: [{name: front, source: 'rtsp://admin:campw@10.0.0.9/stream1'}]\n"
    )
    monkeypatch.setenv("ANPR_DETECTOR__IMGSZ", "320")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    effective = yaml.safe_load(result.stdout)
    assert effective["redis"]["url"] == "redis://:***@10.0.0.5:6379/2"
    assert effective["notify"]["mqtt"]["password"] == "***"
    assert effective["notify"]["webhooks"][0]["url"] == "https://u:***@ops.example/hook"
    assert effective["notify"]["webhooks"][0]["secret_file"] == str(tmp_path / "hook.secret")  # a path is no secret
    assert effective["cameras"][0]["source"] == "rtsp://admin:***@10.0.0.9/stream1"
    assert effective["detector"]["imgsz"] == 320  # the environment applies
    assert effective["runtime"]["workers"] == 1  # defaults included
    assert not [secret for secret in ("s3cret", "hunter2", "tok@", "campw") if secret in result.output]

    path.write_text("detector: {backend: tensorrt}\n")
    bad = CliRunner().invoke(app, ["config", "check", str(path)])
    assert bad.exit_code == 2 and "detector.backend" in bad.output


def test_config_schema_is_the_json_schema_of_the_tree() -> None:
    result = CliRunner().invoke(app, ["config", "schema"])
    schema = json.loads(result.stdout)
    assert schema == AnprConfig.model_json_schema()
    assert schema["additionalProperties"] is False and "detector" in schema["properties"]
    detector = schema["$defs"]["DetectorConfig"]["properties"]["imgsz"]
    assert detector["multipleOf"] == 32 and "network input size" in detector["description"]
