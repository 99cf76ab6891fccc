"""Draining: once asked, new requests get 503 ``shutting_down`` with Retry-After, while the
request in flight finishes and the drain returns when it did (or says how many are left)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.draining import Drain, DrainMiddleware


def slow_app(release: asyncio.Event, entered: asyncio.Event) -> tuple[Drain, DrainMiddleware]:
    async def answer(request):
        entered.set()
        await release.wait()  # in flight until the test says so
        return PlainTextResponse("done")

    async def health(request):
        return PlainTextResponse("ok")

    drain = Drain()
    app = Starlette(routes=[Route("/work", answer), Route("/healthz", health)])
    return drain, DrainMiddleware(app, drain)


@contextlib.asynccontextmanager
async def one_in_flight() -> AsyncIterator[tuple[Drain, httpx.AsyncClient, asyncio.Event,
                                                  asyncio.Task]]:
    """A drainable app with one request in flight until the returned event is set."""
    release, entered = asyncio.Event(), asyncio.Event()
    drain, app = slow_app(release, entered)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tailor") as client:
        in_flight = asyncio.create_task(client.get("/work"))
        await entered.wait()
        yield drain, client, release, in_flight


def test_a_drain_refuses_new_requests_and_waits_for_the_one_in_flight() -> None:
    async def scenario() -> None:
        async with one_in_flight() as (drain, client, release, in_flight):
            draining = asyncio.create_task(drain.drain(timeout_s=600))
            await asyncio.sleep(0)  # the drain has begun
            assert drain.draining and drain.in_flight == 1

            refused = await client.get("/work")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            assert refused.headers["connection"] == "close"
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("service_unavailable", "shutting_down")
            assert (await client.get("/healthz")).status_code == 200  # alive while draining
            assert not draining.done()

            release.set()
            assert (await in_flight).text == "done"
            assert await draining == 0  # nothing left in flight

    asyncio.run(scenario())


def test_a_drain_past_its_timeout_says_how_many_requests_are_left() -> None:
    async def scenario() -> None:
        async with one_in_flight() as (drain, _, release, in_flight):
            assert await drain.drain(timeout_s=0) == 1
            release.set()
            await in_flight

    asyncio.run(scenario())
