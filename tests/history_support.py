"""Helpers for the history tests: configs, the `anpr` command, the consumer processes, MQTT and webhook inboxes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support import free_port

from anpr.config import REPO_ROOT
from anpr.notify import verify_signature

ANPR = str(Path(sys.executable).parent / "anpr")
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = b"test-webhook-secret"


def anpr(
    *args: str, config: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `anpr` command as a user does."""
    return subprocess.run(
        [ANPR, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


def history_config(
    tmp_path: Path,
    prefix: str,
    store_url: str | None,
    mqtt_prefix: str | None = None,
    webhook: WebhookInbox | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The dev config on the shared Redis under `prefix`, a store at `store_url` (None: SQLite in tmp)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = yaml.safe_load((REPO_ROOT / "configs" / "dev.yaml").read_text())
    fast = {"block_ms": 100, "backoff_base_s": 0.05, "backoff_max_s": 0.5, "claim_idle_s": 2.0}
    cfg.update(
        redis={"url": REDIS_URL, "prefix": prefix},
        events={"spool_dir": str(tmp_path / "spool")},
        store={"url": store_url, "data_dir": str(tmp_path / "store")},
        archive={**fast, "consumer": "archive-test", "metrics_port": 0},
        hits={**fast, "consumer": "hits-test", "reload_s": 0.2},
    )
    notify: dict[str, Any] = {**fast, "consumer": "notify-test"}
    if mqtt_prefix:
        notify["mqtt"] = {"enabled": True, "topic_prefix": mqtt_prefix}
    if webhook:
        secret = tmp_path / "webhook.secret"
        secret.write_bytes(SECRET)
        notify["webhooks"] = [{"name": "web", "url": webhook.url, "secret_file": str(secret)}]
    cfg["notify"] = notify
    for section, values in (extra or {}).items():
        cfg[section] = {**cfg.get(section, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


class Consumers:
    """`anpr archive`, `anpr hits run` and (when configured) `anpr notify` as processes, stopped with SIGTERM."""

    def __init__(self, config: Path, which: tuple[str, ...] = ("archive", "hits", "notify")) -> None:
        self.config = config
        self.which = which
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        args = {"archive": ["archive"], "hits": ["hits", "run"], "notify": ["notify"]}[name]
        log = (self.config.parent / f"{name}.log").open("ab")
        proc = subprocess.Popen([ANPR, *args, "--config", str(self.config)], stdout=log, stderr=log, cwd=REPO_ROOT)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def log(self, name: str) -> str:
        return (self.config.parent / f"{name}.log").read_text(errors="replace")

    def __enter__(self) -> Consumers:
        for name in self.which:
            self.start(name)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                assert proc.wait(timeout=20) == 0, f"{name} exited {proc.returncode}:\n{self.log(name)[-3000:]}"
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


class MqttInbox:
    """Subscribed at QoS 1 to <prefix>/#, keeping every JSON payload by the topic's last part."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._got: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", 1883)
        self._client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker at 127.0.0.1:1883"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._got.append((msg.topic, json.loads(msg.payload)))

    def messages(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for topic, m in self._got if topic.rsplit("/", 1)[-1] == kind]

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self._got]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class WebhookInbox:
    """A real HTTP receiver (starlette under uvicorn) that checks each POST's signature."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._got: list[tuple[str, dict[str, Any]]] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.body()
            h = request.headers
            ok = verify_signature(
                SECRET, h.get("x-anpr-timestamp", ""), body, h.get("x-anpr-signature", ""), time.time()
            )
            with self._lock:
                if not ok:
                    self.bad_signatures += 1
                    return Response(status_code=401)
                self._got.append((h.get("x-anpr-topic", ""), json.loads(body)))
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "webhook receiver did not start"
            time.sleep(0.05)

    def messages(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for t, m in self._got if t == topic]

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
