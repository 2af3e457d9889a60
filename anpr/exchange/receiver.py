"""The reference partner receiver: an ASGI app (Starlette on uvicorn) that takes signed messages.

`POST /v1/messages` with `{"messages": [...]}` (docs/exchange-protocol.md). A request is all or
nothing: every message is checked (size, JSON, signature, key, clock window, envelope, replay) before
any is stored, and the first failure answers a precise 4xx with no side effect at all. Storing is one
Lua script per request, so the replay check, the nonce cache, the idempotency check by message id
and the XADD to the inbox stream happen atomically: a message id already stored is answered 2xx as a
`duplicate` and not stored again, which is what turns the publisher's at-least-once into exactly-once.

The inbox stream keeps every accepted message with its signature (evidence of who sent it); it is
never trimmed here.

`LandingIngest` is the receiving end of the Redis transport: the partner XADDs messages into our
landing stream, and the ingest puts each through the same checks and store, one message at a time.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Any

import redis
import uvicorn
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from anpr.config import AnprConfig, ReceiverConfig
from anpr.exchange.envelope import Envelope, Rejected, Signature, SignedMessage, Verifier
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.streams import stream_entries

log = logging.getLogger(__name__)

# One status per refusal; the `error` code in the body says which check failed.
HTTP_STATUS = {
    "malformed": 400,
    "unsigned": 401,
    "bad_signature": 401,
    "timestamp_out_of_window": 401,
    "unknown_key": 403,
    "replay": 409,
    "too_large": 413,
    "too_many_messages": 413,
    "unsupported_media_type": 415,
    "invalid_envelope": 422,
    "wrong_receiver": 422,
}

# KEYS: inbox, stats, then (nonce key, message key) per message.
# ARGV: request token, nonce ttl, dedup ttl, received_at, then 7 fields per message.
# The token makes the script safe to run twice for one request (a client retry after a lost reply):
# its own nonces and stores are recognised; only another request's nonce is a replay.
_STORE = """
local n = (#KEYS - 2) / 2
for i = 1, n do
  local seen = redis.call('GET', KEYS[2 * i + 1])
  if seen and seen ~= ARGV[1] then return {'replay', tostring(i)} end
end
local out = {'ok'}
local stored, dup = 0, 0
for i = 1, n do
  local b = 4 + (i - 1) * 7
  redis.call('SET', KEYS[2 * i + 1], ARGV[1], 'EX', ARGV[2])
  local owner = redis.call('GET', KEYS[2 * i + 2])
  if not owner then
    redis.call('XADD', KEYS[1], '*', 'message_id', ARGV[b + 1], 'payload', ARGV[b + 2], 'alg', ARGV[b + 3],
               'key_id', ARGV[b + 4], 'created', ARGV[b + 5], 'nonce', ARGV[b + 6], 'signature', ARGV[b + 7],
               'received_at', ARGV[4])
    redis.call('SET', KEYS[2 * i + 2], ARGV[1], 'EX', ARGV[3])
    stored = stored + 1
    out[i + 1] = 'stored'
  elseif owner == ARGV[1] then
    out[i + 1] = 'stored'
  else
    dup = dup + 1
    out[i + 1] = 'duplicate'
  end
end
if stored > 0 then redis.call('HINCRBY', KEYS[2], 'stored', stored) end
if dup > 0 then redis.call('HINCRBY', KEYS[2], 'duplicate', dup) end
return out
"""


class _Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[SignedMessage]


class RequestRejected(Exception):
    """A refused request: which check failed, on which message (0-based index), and why."""

    def __init__(self, code: str, detail: str, index: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.index = index

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, "index": self.index}


class Intake:
    """Checks a batch of messages and stores the accepted ones; shared by every way messages arrive."""

    def __init__(self, cfg: ReceiverConfig, r: redis.Redis, keys: Keys) -> None:
        self._cfg = cfg
        self._r = r
        self._keys = keys
        self._verifier = Verifier.from_config(cfg.trusted_keys, cfg.receiver, cfg.max_skew_s)
        self._store = r.register_script(_STORE)

    def accept_body(self, body: bytes, now: float) -> list[dict[str, str]]:
        try:
            batch = _Batch.model_validate_json(body)
        except ValidationError as exc:
            raise RequestRejected("malformed", _first_error(exc)) from None
        if not batch.messages:
            raise RequestRejected("malformed", "no messages")
        if len(batch.messages) > self._cfg.max_messages:
            raise RequestRejected("too_many_messages", f"{len(batch.messages)} > {self._cfg.max_messages}")
        return self.accept(batch.messages, now)

    def accept(self, messages: list[SignedMessage], now: float, token: str | None = None) -> list[dict[str, str]]:
        """Per message: `stored` or `duplicate`. Raises RequestRejected before storing anything.

        `token` identifies the delivery: the same token again (a retried script, a landing entry read
        twice) finds its own nonces and stores and is not a replay. Defaults to a fresh one.
        """
        checked: list[tuple[Envelope, Signature, str]] = []
        nonces: set[tuple[str, str]] = set()
        for i, m in enumerate(messages):
            try:
                env, sig = self._verifier.verify(m, now)
            except Rejected as exc:
                raise RequestRejected(exc.code, exc.detail, i) from None
            if (sig.key_id, sig.nonce) in nonces:
                raise RequestRejected("replay", "nonce repeated within the request", i)
            nonces.add((sig.key_id, sig.nonce))
            checked.append((env, sig, m.payload))
        keys = [self._keys.exchange_inbox, self._keys.receiver_stats]
        args: list[str | int] = [
            token or uuid.uuid4().hex,
            2 * self._cfg.max_skew_s,
            self._cfg.dedup_ttl_s,
            int(now * 1000),
        ]
        for env, sig, payload in checked:
            keys += [self._keys.exchange_nonce(sig.key_id, sig.nonce), self._keys.exchange_message(env.message_id)]
            args += [env.message_id, payload, sig.alg, sig.key_id, sig.created, sig.nonce, sig.value]
        result = [_text(x) for x in self._store(keys=keys, args=args)]
        if result[0] == "replay":
            raise RequestRejected("replay", "nonce already used", int(result[1]) - 1)
        return [{"message_id": env.message_id, "status": s} for (env, _, _), s in zip(checked, result[1:], strict=True)]


class LandingIngest:
    """Consumes the landing stream the partner XADDs into (Redis transport) through the same Intake.

    Each entry is checked alone, so one bad message never holds up the others; a refused one goes to
    the rejected stream with its reason. The clock window is measured against the time the entry
    landed (its stream id), not the time we read it: an ingest that was down must not refuse a
    backlog as stale. The entry id is the store token, so an entry read again after a crash (stored,
    not yet acknowledged) is recognised as itself and not refused as a replay.
    """

    GROUP = "exchange-ingest"

    def __init__(self, cfg: AnprConfig, r: redis.Redis, stop: threading.Event | None = None) -> None:
        self._keys = Keys(cfg.redis.prefix)
        self._r = r
        self._intake = Intake(cfg.receiver, r, self._keys)
        self._stop = stop or threading.Event()
        self._consumer = socket.gethostname()
        self._block_ms = min(1000, int(cfg.redis.socket_timeout_s * 500))

    def run(self, burst: bool = False) -> None:
        """Consume until stopped; burst: until nothing is left. A Redis error starts over after a pause."""
        while not self._stop.is_set():
            try:
                self._consume(burst)
                return
            except redis.RedisError as exc:
                log.warning("redis error (%r); starting over in 1 s", exc)
                self._stop.wait(1.0)

    def _consume(self, burst: bool) -> None:
        stream = self._keys.exchange_landing
        try:
            self._r.xgroup_create(stream, self.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # Own pending entries first (read before a crash, not acknowledged), then new ones.
        after = "0-0"
        while not self._stop.is_set():
            entries = stream_entries(self._r.xreadgroup(self.GROUP, self._consumer, {stream: after}, count=100))
            if not entries:
                break
            for entry_id, fields in entries:
                self._ingest(stream, entry_id, fields)
            after = entries[-1][0]
        while not self._stop.is_set():
            block = None if burst else self._block_ms
            entries = stream_entries(
                self._r.xreadgroup(self.GROUP, self._consumer, {stream: ">"}, count=100, block=block)
            )
            if burst and not entries:
                return
            for entry_id, fields in entries:
                self._ingest(stream, entry_id, fields)

    def _ingest(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        landed_at = int(entry_id.split("-")[0]) / 1000
        try:
            try:
                message = SignedMessage.model_validate_json(fields.get(b"message", b""))
            except ValidationError as exc:
                raise RequestRejected("malformed", _first_error(exc)) from None
            self._intake.accept([message], landed_at, token=entry_id)
        except RequestRejected as exc:
            log.warning("rejected landing entry %s: %s", entry_id, exc)
            pipe = self._r.pipeline(transaction=True)
            pipe.xadd(self._keys.exchange_rejected, {"source_id": entry_id, "error": exc.code, "detail": exc.detail})
            pipe.xack(stream, self.GROUP, entry_id)
            pipe.execute()
            return
        self._r.xack(stream, self.GROUP, entry_id)


def create_app(cfg: AnprConfig, r: redis.Redis | None = None) -> Starlette:
    rc = cfg.receiver
    client = r if r is not None else connect(cfg.redis)
    intake = Intake(rc, client, Keys(cfg.redis.prefix))

    async def messages(request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                raise RequestRejected("unsupported_media_type", "send application/json")
            body = await _read_limited(request, rc.max_body_bytes)
            results = await run_in_threadpool(intake.accept_body, body, time.time())
        except RequestRejected as exc:
            log.warning("rejected request from %s: %s", request.client, exc.body())
            return JSONResponse(exc.body(), status_code=exc.status)
        except ClientDisconnect:
            # The sender gave up before its body arrived; nothing was stored, and no one hears an answer.
            return Response(status_code=499)
        except redis.RedisError as exc:
            log.error("storage unavailable: %r", exc)
            return JSONResponse(
                {"error": "unavailable", "detail": "storage unavailable"}, status_code=503, headers={"retry-after": "1"}
            )
        return JSONResponse({"results": results})

    async def healthz(_: Request) -> JSONResponse:
        try:
            await run_in_threadpool(client.ping)
        except redis.RedisError:
            return JSONResponse({"status": "storage unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/v1/messages", messages, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` (before reading it all, if declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestRejected("too_large", f"body of {declared} bytes exceeds {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestRejected("too_large", f"body exceeds {limit} bytes")
    return bytes(body)


def serve(cfg: AnprConfig) -> None:
    """Run the receiver until SIGINT/SIGTERM (uvicorn handles both)."""
    rc = cfg.receiver
    uvicorn.run(
        create_app(cfg),
        host=rc.host,
        port=rc.port,
        log_level="warning",
        access_log=False,
        # A sender's idle keep-alive (TLS) connection must not hold a restart up indefinitely.
        timeout_graceful_shutdown=3,
        ssl_certfile=str(rc.tls_certfile) if rc.tls_certfile else None,
        ssl_keyfile=str(rc.tls_keyfile) if rc.tls_keyfile else None,
    )


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(map(str, e["loc"]))
    return f"{where}: {e['msg']}" if where else str(e["msg"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
