"""The loads and faults of `tailor check-faults`, each against a running ``TailorProcess``.

Each returns a JSON-able dict of what it measured and ``ok`` with what it promises:
- sustained load: every request answered 200; memory at start and end (bounded);
- burst above the queue bound: the excess refused with 429 at once, the admitted
  requests' p95 against the same requests' p95 unloaded;
- a Generator replica SIGKILLed under load: no 500 and no request unanswered; each
  failure a 503 (or a retry that succeeded, which shows as a 200);
- Redis SIGKILLed and restarted under feedback load (``appendfsync always``): every
  judgment acknowledged (201) is in the stream after the restart; each failure a 503.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from typing import Protocol

import httpx
import redis

from benchmarks.faults.load import LoadResult, chat_sender, run_load
from benchmarks.faults.stack import TailorProcess
from contracts.keys import FEEDBACK_STREAM


class RedisControl(Protocol):
    """The suite's own redis-server (``commands.redis_server.RedisServer``)."""

    url: str

    def kill(self) -> None: ...  # SIGKILL

    def start(self) -> object: ...  # on the same port and data folder; waits for the AOF load

    def pid(self) -> int | None: ...


def _no_server_errors(load: LoadResult, allowed: set) -> bool:
    return all(status in allowed or str(status).startswith("2") for status in load.statuses)


def sustained_load(tailor: TailorProcess, redis_server: RedisControl, clients: int,
                   duration_s: float, max_tokens: int) -> dict:
    """``clients`` clients chatting for ``duration_s``; RSS of every process before and after."""
    before = tailor.memory([redis_server.pid()])
    load = asyncio.run(run_load(tailor.url, chat_sender(max_tokens), clients, duration_s))
    after = tailor.memory([redis_server.pid()])
    return {"load": load.summary(), "memory_start_mib": before, "memory_end_mib": after,
            "ok": load.requests > 0 and load.succeeded == load.requests}


def burst_above_queue_bound(tailor: TailorProcess, size: int, max_tokens: int,
                            unloaded_requests: int = 20) -> dict:
    """``size`` requests at once, more than a replica admits; the admitted ones' latency
    against the same request's alone, one at a time."""
    send = chat_sender(max_tokens)
    unloaded = asyncio.run(_sequential(tailor.url, send, unloaded_requests))
    burst = asyncio.run(_at_once(tailor.url, send, size))
    refused = burst.statuses.get(429, 0)
    ratio = (burst.percentile_s(95) / unloaded.percentile_s(95)
             if burst.latencies_s and unloaded.latencies_s else None)
    return {"burst": burst.summary(), "unloaded": unloaded.summary(),
            "refused_429": refused,
            "admitted_p95_over_unloaded_p95": None if ratio is None else round(ratio, 1),
            "ok": refused > 0 and _no_server_errors(burst, {429})
            and set(burst.failure_bodies) <= {(429, "rate_limit_exceeded")}}


async def _sequential(url: str, send, count: int) -> LoadResult:
    result = LoadResult(1, 0.0)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for i in range(count):
            sent = time.monotonic()
            response = await send(http, i, random.Random(i))
            result.record(response, time.monotonic() - sent)
    result.seconds = time.monotonic() - started
    return result


async def _at_once(url: str, send, size: int) -> LoadResult:
    result = LoadResult(size, 0.0)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    started = time.monotonic()

    async def one(http: httpx.AsyncClient, i: int) -> None:
        sent = time.monotonic()
        try:
            response = await send(http, i, random.Random(i))
        except httpx.HTTPError as err:
            result.record_lost(err)
            return
        result.record(response, time.monotonic() - sent)

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.gather(*[one(http, i) for i in range(size)])
    result.seconds = time.monotonic() - started
    return result


def generator_killed_under_load(tailor: TailorProcess, clients: int, duration_s: float,
                                max_tokens: int) -> dict:
    """SIGKILL the Generator replica a third of the way into a chat load."""
    killed: list[int] = []

    async def run() -> LoadResult:
        async def kill_later() -> None:
            await asyncio.sleep(duration_s / 3)
            pids = tailor.generator_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        load, _ = await asyncio.gather(
            run_load(tailor.url, chat_sender(max_tokens), clients, duration_s), kill_later())
        return load

    load = asyncio.run(run())
    back = tailor.generator_pids()
    return {"load": load.summary(), "killed_pid": killed[0] if killed else None,
            "replica_back": bool(back) and back != killed,
            "ok": bool(killed) and _no_server_errors(load, {503})
            and set(load.failure_bodies) <= {(503, "replica_lost")}}


def redis_killed_under_feedback(tailor: TailorProcess, redis_server: RedisControl, clients: int,
                                duration_s: float, down_s: float = 5.0) -> dict:
    """Feedback load; Redis SIGKILLed a third of the way in and restarted ``down_s`` later.
    Acknowledged judgments (201, their stream ids) against those in the stream after."""
    completions = _completions_to_rate(tailor.url, clients)
    acknowledged: set[str] = set()

    async def send(http: httpx.AsyncClient, index: int, draw: random.Random) -> httpx.Response:
        return await http.post("/v1/feedback", headers={
            "X-User-Id": f"rater-{index}", "Idempotency-Key": uuid.uuid4().hex}, json={
            "completion_id": completions[index], "type": "thumbs", "choice": 0,
            "value": draw.choice(["up", "down"])})

    def on_response(index: int, response: httpx.Response) -> None:
        if response.status_code == 201:
            acknowledged.add(response.json()["id"])

    async def run() -> LoadResult:
        async def fault() -> None:
            await asyncio.sleep(duration_s / 3)
            await asyncio.to_thread(redis_server.kill)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(redis_server.start)

        load, _ = await asyncio.gather(
            run_load(tailor.url, send, clients, duration_s, on_response=on_response), fault())
        return load

    load = asyncio.run(run())
    client = redis.Redis.from_url(redis_server.url)
    stored = {entry_id.decode() for entry_id, _ in client.xrange(FEEDBACK_STREAM)}
    client.close()
    lost = acknowledged - stored
    return {"load": load.summary(), "acknowledged": len(acknowledged),
            "acknowledged_and_stored": len(acknowledged & stored), "lost": len(lost),
            "stored_not_acknowledged": len(stored - acknowledged),
            "ok": not lost and bool(acknowledged) and _no_server_errors(load, {503})
            and set(load.failure_bodies) <= {(503, "store_unavailable")}}


def _completions_to_rate(url: str, raters: int) -> list[str]:
    """One completion per rater (a user rates only their own)."""
    ids = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(raters):
            response = http.post("/v1/chat/completions", headers={"X-User-Id": f"rater-{i}"},
                                 json={"model": "tailor-base", "max_tokens": 4,
                                       "messages": [{"role": "user", "content": f"rate me {i}"}]})
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids
