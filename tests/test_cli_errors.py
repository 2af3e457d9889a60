"""Errors an operator can fix, run as the operator would (a real `anpr` process): one line naming what to
fix, exit status 2, no traceback unless -v asks for it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from support import free_port

import anpr
from anpr.config import REPO_ROOT

ANPR = Path(sys.executable).parent / "anpr"


def anpr_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANPR), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT, check=False
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without log records (timestamped INFO/WARNING lines) and FFmpeg's chatter."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]


def test_events_tail_with_redis_unreachable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"redis: {{url: 'redis://127.0.0.1:{port}/0', connect_timeout_s: 0.5, retries: 0}}\n")

    result = anpr_cli("events", "tail", "-c", str(cfg))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: Redis unreachable (Error 111 connecting to 127.0.0.1:{port}. Connection refused.): start it, "
        "or fix redis.url in the config (or ANPR_REDIS__URL)"
    ]
    verbose = anpr_cli("-v", "events", "tail", "-c", str(cfg))
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "ConnectionError" in verbose.stderr


def test_run_with_the_health_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "site.yaml"
        cfg.write_text(
            "redis: {url: 'redis://127.0.0.1:6379/0', prefix: test-cli-errors}\n"
            f"events: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
            "cameras: [{name: front, source: sample_videos/truck_front.mp4}]\n"
            f"runtime: {{health: {{port: {port}}}, camera_wait_s: 5}}\n"
        )
        result = anpr_cli("run", "-c", str(cfg), timeout=120)

    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [
        f"error: health endpoint cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use; "
        "set runtime.health.port"
    ]


def test_misspelt_env_section_and_version() -> None:
    env = {"PATH": "/usr/bin:/bin", "ANPR_DETECTR__BACKEND": "torch"}
    result = anpr_cli("events", "tail", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: environment variable ANPR_DETECTR__BACKEND: no config section 'detectr'")
    assert len(result.stderr.strip().splitlines()) == 1

    version = anpr_cli("--version")
    assert version.returncode == 0 and version.stdout == f"anpr {anpr.__version__}\n"
    assert anpr.__version__.count(".") >= 2


def test_burst_runs_with_redis_unreachable_give_up_with_one_line(tmp_path: Path) -> None:
    """A catch-up run (`--burst`) answers instead of retrying for ever; the service mode keeps waiting."""
    port = free_port()
    key = tmp_path / "key.pem"
    assert anpr_cli("exchange-keygen", str(key)).returncode == 0
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"redis: {{url: 'redis://127.0.0.1:{port}/0', connect_timeout_s: 0.5, retries: 0}}\n"
        f"publisher: {{signing_key_file: '{key}', metrics_port: 0, backoff_base_s: 0.05}}\n"
        f"archive: {{metrics_port: 0, backoff_base_s: 0.05}}\n"
        f"store: {{data_dir: '{tmp_path / 'store'}'}}\n"
    )
    for args in (("publisher", "--burst"), ("archive", "--burst")):
        result = anpr_cli(*args, "-c", str(cfg))
        assert result.returncode == 2, (args, result.stderr)
        assert [line for line in error_lines(result)] == [
            f"error: Redis unreachable (Error 111 connecting to 127.0.0.1:{port}. Connection refused.): start it, "
            "or fix redis.url in the config (or ANPR_REDIS__URL)"
        ], args


def test_run_refuses_a_spool_of_another_destination_before_starting_workers(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "destination").write_text('{"url": "redis://10.0.0.9:6379", "db": 0, "prefix": "production"}\n')
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        "redis: {url: 'redis://127.0.0.1:6379/0', prefix: test-cli-errors}\n"
        f"events: {{spool_dir: '{spool}'}}\n"
        "cameras: [{name: front, source: sample_videos/truck_front.mp4}]\n"
        "runtime: {health: {port: 0}}\n"
    )
    result = anpr_cli("run", "-c", str(cfg), timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "belongs to redis://10.0.0.9:6379 db 0 prefix 'production'" in line
