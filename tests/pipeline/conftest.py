"""Fixtures for end-to-end pipeline tests: real models, a real Redis, configs pointing at both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from anpr.config import REPO_ROOT, AnprConfig, load_config
from anpr.recognize import PlateRecognizer

REDIS_URL = "redis://127.0.0.1:6379/0"
SAMPLES = REPO_ROOT / "sample_videos"


@pytest.fixture(scope="session")
def dev_config() -> AnprConfig:
    return load_config(REPO_ROOT / "configs" / "dev.yaml")


@pytest.fixture(scope="session")
def recognizer(dev_config: AnprConfig) -> PlateRecognizer:
    """Models load once per session: a few seconds each time otherwise."""
    return PlateRecognizer.from_config(dev_config)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the shared Redis; every key under it is deleted afterwards."""
    prefix = f"test-pipeline-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """Typed Any: redis-py's stubs type every reply as a union of everything."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def config(dev_config: AnprConfig, redis_prefix: str, tmp_path: Path) -> AnprConfig:
    """The dev config on the shared Redis under a test prefix, spooling into tmp."""
    update: dict[str, Any] = {
        "redis": dev_config.redis.model_copy(update={"url": REDIS_URL, "prefix": redis_prefix}),
        "events": dev_config.events.model_copy(update={"spool_dir": tmp_path / "spool"}),
    }
    return dev_config.model_copy(update=update)
