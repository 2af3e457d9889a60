"""Fixtures for tests of any folder: the shared Redis on 6379, under a key prefix of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from support import fast_client, pg_database

from anpr.keys import Keys


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = fast_client(6379)
    yield c
    c.close()


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[Keys]:
    """A fresh prefix; every key under it is deleted afterwards."""
    k = Keys(f"test-{uuid.uuid4().hex[:10]}")
    yield k
    for key in client.scan_iter(f"{k.prefix}:*"):
        client.delete(key)


@pytest.fixture
def redis_prefix(client: redis.Redis) -> Iterator[str]:
    """A fresh key prefix on the shared Redis (for processes configured by URL); deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The store on a fresh database of the shared PostgreSQL, or None: the embedded SQLite default."""
    if request.param == "sqlite":
        yield None
        return
    with pg_database() as url:
        yield url
