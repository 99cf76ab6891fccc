"""Graceful shutdown of the HTTP side: stop taking requests, let those in flight finish.

Ray Serve's own shutdown does not drain HTTP: ``serve.shutdown()`` kills the proxy
about at once (its ``shutdown()`` is a no-op, then ``ray.kill``), cutting every
answer still streaming. So the runner (``tailor up``) first tells the Ingress to
drain: from then on a new request gets 503 ``shutting_down`` with ``Retry-After``
and ``Connection: close`` (``/readyz`` too, so a load balancer looks elsewhere),
while the requests already admitted run to their end; the runner waits for them,
up to ``TAILOR_DRAIN_TIMEOUT_S``, before it shuts Serve down.

A request counts as in flight from its first byte in until its last byte out, a
streamed answer included: this is plain ASGI middleware, below FastAPI's.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_body

# What a client is told to wait: another replica, or this service restarted, answers by then.
SHUTDOWN_RETRY_AFTER_S = 5
# Liveness stays true while draining: a restart by the orchestrator would cut the drain.
ALWAYS_ANSWERED = {"/healthz"}


class Drain:
    """Counts the requests in flight; once ``drain()`` is called, refuses new ones."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests from now on; wait until none is in flight or ``timeout_s``
        passed. The number still in flight (0: all finished)."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self.in_flight


class DrainMiddleware:
    """ASGI middleware around the API that counts for, and refuses on behalf of, a ``Drain``."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drain = self.drain
        if scope["type"] != "http" or scope["path"] in ALWAYS_ANSWERED:
            await self.app(scope, receive, send)
            return
        if drain.draining:
            await _refuse(send)
            return
        drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            drain.leave()


async def _refuse(send: Send) -> None:
    body = json.dumps(error_body(
        503, "the server is shutting down and takes no new requests; retry in "
        f"{SHUTDOWN_RETRY_AFTER_S} s (another replica, or this one restarted, will answer)",
        code="shutting_down")).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(SHUTDOWN_RETRY_AFTER_S).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
