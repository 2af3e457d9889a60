"""Fixtures for tests of any folder: the shared Redis on 6379, under a key prefix of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from support import fast_client

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
