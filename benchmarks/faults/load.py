"""Closed-loop load: ``clients`` concurrent clients, each sending its next request when the
last one answered, for ``duration_s``; what came back, by status, and how long it took.

A failed request (an error status or no answer) is followed by a short pause, as a real
client's back-off would be, so that a few clients spinning on instant 503s do not take
the cores from the server they measure; ``Retry-After`` itself (5 s) would idle most
of a short fault run.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

FAILURE_PAUSE_S = 0.2
# One request: the client, the client's index and a random source; the response.
Send = Callable[[httpx.AsyncClient, int, random.Random], Awaitable[httpx.Response]]


@dataclass
class LoadResult:
    clients: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)  # status code (or "no answer") -> count
    latencies_s: list[float] = field(default_factory=list)  # of the 2xx answers
    failure_bodies: Counter = field(default_factory=Counter)  # (status, error code) -> count

    def record(self, response: httpx.Response, latency_s: float) -> None:
        """One answer: its status, its latency if it succeeded, else its error code."""
        self.statuses[response.status_code] += 1
        if response.is_success:
            self.latencies_s.append(latency_s)
        else:
            self.failure_bodies[(response.status_code, error_code(response))] += 1

    def record_lost(self, err: httpx.HTTPError) -> None:
        """A request that got no answer at all (connection refused or cut, a timeout)."""
        self.statuses["no answer"] += 1
        self.failure_bodies[("no answer", type(err).__name__)] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def succeeded(self) -> int:
        return sum(n for status, n in self.statuses.items() if str(status).startswith("2"))

    def percentile_s(self, q: float) -> float | None:
        """Nearest-rank percentile of the successful requests' latency."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]

    def summary(self) -> dict:
        return {
            "clients": self.clients, "seconds": round(self.seconds, 1),
            "requests": self.requests, "succeeded": self.succeeded,
            "throughput_rps": round(self.succeeded / self.seconds, 2) if self.seconds else 0.0,
            "p50_s": _round(self.percentile_s(50)), "p95_s": _round(self.percentile_s(95)),
            "p99_s": _round(self.percentile_s(99)),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "failures": {f"{status} {code}": n for (status, code), n in
                         sorted(self.failure_bodies.items(), key=str)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def run_load(url: str, send: Send, clients: int, duration_s: float, seed: int = 0,
                   on_response: Callable[[int, httpx.Response], None] | None = None,
                   timeout_s: float = 120.0) -> LoadResult:
    """Run ``clients`` loops of ``send`` until ``duration_s`` passed (a request under way
    then still finishes and counts)."""
    result = LoadResult(clients, 0.0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.monotonic()
    deadline = started + duration_s

    async def client_loop(index: int, http: httpx.AsyncClient) -> None:
        draw = random.Random(seed * 10_007 + index)
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                response = await send(http, index, draw)
            except httpx.HTTPError as err:
                result.record_lost(err)
                await asyncio.sleep(FAILURE_PAUSE_S)
                continue
            result.record(response, time.monotonic() - sent)
            if not response.is_success:
                await asyncio.sleep(FAILURE_PAUSE_S)
            if on_response is not None:
                on_response(index, response)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        await asyncio.gather(*[client_loop(i, http) for i in range(clients)])
    result.seconds = time.monotonic() - started
    return result


def error_code(response: httpx.Response) -> str:
    """OpenAI's ``error.code`` of a failed answer; ``not JSON`` for a bare text body."""
    try:
        error = response.json()["error"]
        return str(error.get("code") or error.get("type"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "not JSON"


def chat_sender(max_tokens: int, users: int = 16) -> Send:
    """Chat requests of ``users`` distinct users, prompts varied, ``max_tokens`` each."""

    async def send(http: httpx.AsyncClient, index: int, draw: random.Random) -> httpx.Response:
        user = {"X-User-Id": f"load-{index % users}"}
        return await http.post("/v1/chat/completions", headers=user,
                               json={"model": "tailor-base", "max_tokens": max_tokens,
                                     "messages": [{"role": "user", "content":
                                                   f"question {draw.randrange(10_000)}"}]})

    return send
