"""Test helper, run as a script: the real receiver app behind an ASGI middleware that injects faults.

    python tests/exchange/faulty_receiver.py --config CFG [--schedule 429,500,...] [--p-fault 0.3]
        [--stall-s 1.0] [--retry-after 0.1] [--seed 1]

The first requests get the faults listed in --schedule (so every kind is sure to happen); after that
each request gets a random fault with probability --p-fault. Kinds:

- `429` / `500`: answered before the app sees the request (nothing stored);
- `500_after_store`: the app stores the batch, the client gets 500 (a lost acknowledgement);
- `stall_before`: the request waits --stall-s (past the client's timeout), then the app runs anyway;
- `stall_after_store`: the app stores, then the answer waits past the client's timeout.

Each fault applied is counted in the Redis hash `<prefix>:test:faults` so the test can assert the
faults really happened.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anpr.config import load_config
from anpr.exchange.receiver import create_app
from anpr.redis_client import connect

FAULTS = ("429", "500", "500_after_store", "stall_before", "stall_after_store")


class FaultInjector:
    def __init__(self, app: ASGIApp, args: argparse.Namespace, record: Any) -> None:
        self.app = app
        self.schedule = [k for k in args.schedule.split(",") if k]
        self.p_fault = args.p_fault
        self.stall_s = args.stall_s
        self.retry_after = args.retry_after
        self.rng = random.Random(args.seed)
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/messages":
            await self.app(scope, receive, send)
            return
        if self.schedule:
            kind = self.schedule.pop(0)
        else:
            kind = self.rng.choice(FAULTS) if self.rng.random() < self.p_fault else "ok"
        self.record(kind)
        if kind in ("429", "500"):
            await _drain(receive)
            headers = {"retry-after": str(self.retry_after)} if kind == "429" else {}
            await _respond(send, int(kind), headers)
        elif kind == "stall_before":
            await asyncio.sleep(self.stall_s)
            await self.app(scope, receive, send)
        elif kind in ("500_after_store", "stall_after_store"):
            await self.app(scope, receive, _swallow)
            if kind == "stall_after_store":
                await asyncio.sleep(self.stall_s)
            await _respond(send, 500, {})
        else:
            await self.app(scope, receive, send)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _swallow(_: Message) -> None:
    """Drops the app's real answer: the client never learns that the batch was stored."""


async def _respond(send: Send, status: int, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-length", b"0")]
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b""})
    except OSError:
        pass  # the client timed out and left; that is the point of a stall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--schedule", default="")
    parser.add_argument("--p-fault", type=float, default=0.0)
    parser.add_argument("--stall-s", type=float, default=1.0)
    parser.add_argument("--retry-after", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cfg = load_config(args.config)
    r = connect(cfg.redis)
    faults_key = f"{cfg.redis.prefix}:test:faults"
    app = FaultInjector(create_app(cfg, r), args, lambda kind: r.hincrby(faults_key, kind, 1))
    uvicorn.run(app, host=cfg.receiver.host, port=cfg.receiver.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
