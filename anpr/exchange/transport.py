"""How signed messages reach the partner: one interface, two transports.

A transport either delivers a whole batch (returns), or says why not: `TransientError` (try the same
messages again later: network, timeout, 5xx, 429) or `PermanentError` (the partner refuses them:
retrying cannot help). The publisher owns retries, backoff and dead-lettering; a transport makes
exactly one attempt per call.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import httpx
import redis

from anpr.config import PublisherConfig, RedisConfig
from anpr.exchange.envelope import SignedMessage
from anpr.redis_client import connect
from anpr.streams import PermanentError, TransientError

# 408 and 425 say "try again" even though they are 4xx.
_TRANSIENT_4XX = {408, 425, 429}


class Transport(Protocol):
    def send(self, messages: Sequence[SignedMessage]) -> None: ...

    def close(self) -> None: ...


def encode_batch(messages: Sequence[SignedMessage]) -> bytes:
    """The HTTP request body: {"messages": [message, ...]}."""
    return b'{"messages":[' + b",".join(m.model_dump_json().encode() for m in messages) + b"]}"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def check_response(resp: httpx.Response) -> None:
    """Return on 2xx; otherwise say whether the same request may succeed later (5xx, 408/425/429) or not."""
    if resp.is_success:
        return
    reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 500 or resp.status_code in _TRANSIENT_4XX:
        raise TransientError(reason, parse_retry_after(resp.headers.get("retry-after"), time.time()))
    raise PermanentError(reason)


def post(client: httpx.Client, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
    """One POST, its failure classified: network faults and timeouts may pass, a refusal may not."""
    try:
        resp = client.post(url, content=content, headers=dict(headers))
    except httpx.TimeoutException as exc:
        raise TransientError(f"timeout: {exc!r}") from None
    except httpx.RequestError as exc:  # connection, protocol, decoding: the request may be retried
        raise TransientError(f"network: {exc!r}") from None
    check_response(resp)
    return resp


class HttpTransport:
    """POSTs a batch to the partner's receiver over one keep-alive connection."""

    def __init__(self, cfg: PublisherConfig) -> None:
        self._url = cfg.url
        verify: ssl.SSLContext | bool = True
        if cfg.ca_file is not None:  # the partner's certificate is signed by a private CA
            verify = ssl.create_default_context(cafile=str(cfg.ca_file))
        self._client = httpx.Client(timeout=cfg.request_timeout_s, verify=verify)

    def send(self, messages: Sequence[SignedMessage]) -> None:
        post(self._client, self._url, encode_batch(messages), {"content-type": "application/json"})

    def close(self) -> None:
        self._client.close()


class RedisStreamTransport:
    """XADDs each message into a stream in the partner's Redis, one MULTI per batch.

    Field `message` holds the same JSON as one element of the HTTP body. There is no answer to carry a
    refusal back: the partner verifies when it consumes the stream and keeps its own rejects. A retry
    after a lost reply can add a batch twice, so the partner must deduplicate by message id (as the
    reference receiver does over HTTP).
    """

    def __init__(self, cfg: PublisherConfig) -> None:
        if cfg.partner_redis_url is None:
            raise ValueError("publisher.partner_redis_url is required for the redis transport")
        self._stream = cfg.partner_stream
        self._redis = connect(RedisConfig(url=cfg.partner_redis_url, socket_timeout_s=cfg.request_timeout_s, retries=0))

    def send(self, messages: Sequence[SignedMessage]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for m in messages:
            pipe.xadd(self._stream, {"message": m.model_dump_json()})
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TransientError(f"partner redis: {exc!r}") from None
        except redis.ResponseError as exc:
            # BUSY/LOADING/TRYAGAIN are a server warming up; anything else (NOPERM, WRONGTYPE) is refusal.
            if str(exc).split(" ", 1)[0] in {"BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN"}:
                raise TransientError(f"partner redis: {exc}") from None
            raise PermanentError(f"partner redis refused: {exc}") from None

    def close(self) -> None:
        self._redis.close()


def make_transport(cfg: PublisherConfig) -> Transport:
    if cfg.transport == "redis":
        return RedisStreamTransport(cfg)
    return HttpTransport(cfg)
