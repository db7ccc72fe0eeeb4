"""ASGI middleware: the request body's size and arrival time limits, and per-request metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from server.api.errors import error_body
from server.metrics import Metrics


class BodyLimitMiddleware:
    """413 for bodies over the limit, decided from Content-Length or while streaming, before any work;
    408 for a body that does not arrive in whole within `timeout_s`."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float = 15.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _send_error(send, scope, 400, "Content-Length is not a number")
                return
            if too_big:
                await _send_error(send, scope, 413, f"request body over {self.max_bytes} bytes")
                return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # Chunked or lying clients: read at most the limit plus one chunk, then replay what was read.
        messages, total = [], 0
        give_up = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, give_up - time.monotonic()))
            except TimeoutError:
                await _send_error(send, scope, 408, f"request body not received in whole within {self.timeout_s:g} s")
                return
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await _send_error(send, scope, 413, f"request body over {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Counts every request and its latency."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        # Charged to the request's budget: everything from here on counts, queueing included.
        scope.setdefault("state", {})["received"] = start
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with self.metrics.in_flight():
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["method"], scope["path"], status, time.monotonic() - start)


async def _send_error(send: Callable, scope: dict, status: int, message: str) -> None:
    """An error answered before the app runs, in the same shape the app's own errors have on that path."""
    body = orjson.dumps(error_body(scope["path"], status, message))
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
