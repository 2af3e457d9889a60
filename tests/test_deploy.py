"""What a crossing is installed with: the systemd units, the configs, Redis's settings, the clock check, packaging."""

from __future__ import annotations

import ast
import configparser
import email.utils
import http.server
import importlib.metadata
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support import free_port
from typer.testing import CliRunner

from anpr.cli import app
from anpr.config import RedisConfig, load_config
from anpr.redis_client import connect

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
ANPR_UNITS = [u for u in UNITS if u.name != "anpr-clock-check.service"]
CLOCK_CHECK = DEPLOY / "anpr-clock-check"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


# -- systemd units -------------------------------------------------------------------------------


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as installed: under a root holding systemd's own units, /opt/anpr and the unit files."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install the Debian package systemd (.ci/run does)")
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for exe in (tmp_path / "opt/anpr/.venv/bin/anpr", tmp_path / "opt/anpr/deploy/anpr-clock-check"):
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    installed = tmp_path / "etc/systemd/system"
    installed.mkdir(parents=True)
    files = sorted((DEPLOY / "systemd").iterdir())
    assert {f.suffix for f in files} == {".service", ".target", ".timer"}
    for f in files:
        shutil.copy(f, installed / f.name)
    out = subprocess.run(
        [analyze, f"--root={tmp_path}", "verify", *(str(installed / f.name) for f in files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and unparsable values, which it only warns about: any output fails.
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_systemd_analyze_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a unit without ExecStart are reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install the Debian package systemd (.ci/run does)")
    bad = tmp_path / "anpr-bad.service"
    bad.write_text("[Service]\nProtectSytem=strict\n")
    out = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "ProtectSytem" in out.stderr and "no ExecStart" in out.stderr


@pytest.mark.parametrize("unit", ANPR_UNITS, ids=lambda p: p.stem)
def test_unit_runs_a_real_command_hardened(unit: Path) -> None:
    service = _unit(unit)["Service"]
    exe, *args = service["ExecStart"].split()
    assert exe == "/opt/anpr/.venv/bin/anpr"
    # The command and its options exist: an unknown command or option exits 2 before --help is honoured.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert args[-2:] == ["--config", "/etc/anpr/site.yaml"]
    expected = {
        "User": "anpr",
        "WorkingDirectory": "/opt/anpr",
        "EnvironmentFile": "/etc/anpr/anpr.env",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/anpr",
        "PrivateTmp": "yes",
    }
    assert {k: service.get(k) for k in expected} == expected
    after = _unit(unit)["Unit"]["After"].split()
    assert {"network-online.target", "redis-server.service", "postgresql.service"} <= set(after)
    assert _unit(unit)["Install"]["WantedBy"] == "anpr.target"


def test_every_anpr_command_of_a_crossing_has_a_unit() -> None:
    commands = {" ".join(_unit(u)["Service"]["ExecStart"].split()[1:-2]) for u in ANPR_UNITS}
    assert commands == {"run", "publisher", "archive", "hits run", "notify", "exchange-matcher", "console"}


def test_production_paths_are_the_units_writable_ones() -> None:
    """Everything the production config writes lies under ReadWritePaths; the rest is read-only."""
    cfg = load_config(ROOT / "configs/site-production.yaml")
    written = [cfg.events.spool_dir, cfg.store.data_dir, cfg.detector.cache_dir, cfg.ocr.cache_dir]
    assert all(p.is_relative_to("/var/lib/anpr") for p in written), written


# -- configs -------------------------------------------------------------------------------------

CONFIGS = sorted([*(ROOT / "configs").glob("*.yaml"), *DEPLOY.rglob("*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads(path: Path) -> None:
    load_config(path)


def test_production_site_has_a_front_and_rear_camera_per_lane() -> None:
    cfg = load_config(ROOT / "configs/site-production.yaml")
    lanes: dict[str, list[str]] = {}
    for cam in cfg.cameras:
        assert cam.lane is not None
        lanes.setdefault(cam.lane, []).append(cam.approach_direction)
    # A lane's rear camera sees its traffic drive away: the opposite approach direction of its front camera.
    assert len(cfg.cameras) == 8 and {lane: sorted(d) for lane, d in lanes.items()} == {
        f"lane{i}": ["entry", "exit"] for i in range(1, 5)
    }
    # Secrets come from files, never from the YAML.
    assert cfg.publisher.signing_key_file is not None and cfg.publisher.signing_key_file.is_relative_to("/etc/anpr")
    assert all(w.secret_file.is_relative_to("/etc/anpr") for w in cfg.notify.webhooks)
    assert cfg.redis.url is not None and "@" not in cfg.redis.url


def test_env_file_overrides_only_what_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/anpr.env.example's settings apply over the production file and keep the rest of its sections."""
    env = {}
    for line in (DEPLOY / "anpr.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value
    assert set(env) == {"ANPR_REDIS__URL", "ANPR_STORE__URL"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "configs/site-production.yaml")
    assert cfg.redis.url == env["ANPR_REDIS__URL"] and cfg.redis.prefix == "anpr"
    assert cfg.store.url == env["ANPR_STORE__URL"] and cfg.store.data_dir == Path("/var/lib/anpr/store")


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def production_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """redis-server run with deploy/redis-anpr.conf (port and directory of the test's own)."""
    conf = (DEPLOY / "redis-anpr.conf").read_text()
    password = next(line.split()[1] for line in conf.splitlines() if line.startswith("requirepass "))
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", str(DEPLOY / "redis-anpr.conf"), "--port", str(port), "--dir", str(tmp_path),
         "--logfile", str(tmp_path / "redis.log")],
    )  # fmt: skip
    try:
        yield port, password
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_redis_snippet_gives_aof_everysec_and_a_password(production_redis: tuple[int, str]) -> None:
    port, password = production_redis
    anonymous = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            anonymous.ping()
            pytest.fail("redis answered without the password")
        except redis.AuthenticationError:
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # anpr's own client, with the URL form of deploy/anpr.env.example.
    client = connect(RedisConfig(url=f"redis://:{password}@127.0.0.1:{port}/0"))
    settings = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy")}
    assert settings == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    client.xadd("anpr:events", {"e": "1"})
    assert client.xlen("anpr:events") == 1
    client.close()


# -- clock check ---------------------------------------------------------------------------------


@pytest.fixture
def partner_clock() -> Iterator[tuple[str, list[float]]]:
    """An HTTP server whose Date header runs `offset[0]` seconds ahead of this machine's clock."""
    offset = [0.0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return email.utils.formatdate(time.time() + offset[0], usegmt=True)

        def do_HEAD(self) -> None:
            self.send_response(405)  # like the receiver: only POST, but every answer carries Date
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/messages", offset
    finally:
        server.shutdown()
        server.server_close()


def _clock_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOCK_CHECK), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("ahead_s", "rc"), [(0, 0), (-45, 0), (400, 1), (-400, 1), (90, 1)])
def test_clock_check_measures_the_partners_offset(
    partner_clock: tuple[str, list[float]], ahead_s: float, rc: int
) -> None:
    url, offset = partner_clock
    offset[0] = ahead_s
    out = _clock_check(url, "60")
    assert out.returncode == rc, out.stdout + out.stderr
    reported = int(out.stdout.split(": ")[1].split(" s")[0])
    assert abs(reported + ahead_s) <= 2  # ours minus theirs, to the Date header's second
    assert ("beyond 60 s" in out.stderr) == (rc == 1)


def test_clock_check_says_when_the_partner_cannot_be_asked() -> None:
    out = _clock_check(f"http://127.0.0.1:{free_port()}/v1/messages")
    assert out.returncode == 2 and "cannot reach" in out.stderr


# -- packaging -----------------------------------------------------------------------------------


def test_one_opencv_the_headless_build() -> None:
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    assert "opencv-python-headless" in installed
    assert not installed & {"opencv-python", "opencv-contrib-python", "ultralytics"}, "GUI OpenCV or its ultralytics"
    assert "ultralytics-opencv-headless" in installed


def test_licence_is_agpl_as_ultralytics_requires() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "AGPL-3.0-or-later"
    text = (ROOT / "LICENSE").read_text()
    # The canonical text, as the ultralytics package ships it (which wraps one line differently).
    shipped = importlib.metadata.distribution("ultralytics-opencv-headless").read_text("licenses/LICENSE")
    assert shipped is not None and text.split() == shipped.split()
    assert text.lstrip().startswith("GNU AFFERO GENERAL PUBLIC LICENSE\n                       Version 3")


def test_runtime_does_not_import_extras_only_packages() -> None:
    """av, onnx and onnxslim are extras (test, export): nothing under anpr/ may import them."""
    extras_only = {"av", "onnx", "onnxslim"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {dep.split("=")[0].split(">")[0].split("<")[0].split("[")[0] for dep in project["dependencies"]}
    assert not runtime & extras_only
    offenders = []
    for path in (ROOT / "anpr").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in extras_only]
    assert not offenders
