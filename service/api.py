"""The FastAPI application: OpenAI-compatible chat, feedback, users, operations.

``create_api`` takes a ``GenerationBackend``: the Ray Serve handle of the
Generator in production, or a ``GeneratorCore`` in the same process for tests.
The routes live in ``service.routes``, one router per area; what they share
(settings, backend, stores, metrics) is on ``app.state``, reached through the
dependencies in ``service.deps``.
"""

from __future__ import annotations

import time

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from service.deps import GenerationBackend
from service.draining import Drain, DrainMiddleware
from service.errors import APIError, error_response, install_error_handlers, store_unavailable
from service.feedback_store import FeedbackStore
from service.metrics import IngressMetrics
from service.rate_limits import RateLimits
from service.routes import chat, feedback, gold_checks, openwebui, operations, page, users


def create_api(settings: Settings, backend: GenerationBackend, store: FeedbackStore,
               request_ids: bool = True) -> FastAPI:
    """``request_ids``: give every response an X-Request-ID. Off behind Ray Serve, whose
    proxy already does (and hands the id to the app as a request header)."""
    app = FastAPI(title="Tailor", version="0.1.0", summary="Per-user LoRA personalization")
    install_error_handlers(app)
    app.state.settings = settings
    app.state.backend = backend
    app.state.store = store
    app.state.adapter_store = AdapterStore(settings.adapter_store_uri)
    app.state.metrics = IngressMetrics()
    app.state.created = int(time.time())

    app.state.rate_limits = RateLimits(settings)

    @app.middleware("http")
    async def limit_rates(request: Request, call_next):
        try:
            headers = await app.state.rate_limits.check(request)
        except APIError as err:
            return error_response(err)
        except (RedisConnectionError, RedisTimeoutError):  # outside the exception handlers
            return store_unavailable()
        response = await call_next(request)
        response.headers.update(headers)
        return response

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        app.state.metrics.requests.labels(
            route=getattr(route, "path", "other"), status=response.status_code).inc()
        return response

    for area in (chat, feedback, users, gold_checks, operations, page, openwebui):
        app.include_router(area.router)
    # outside the routes and the rate limits: a draining server refuses before any work
    app.state.drain = Drain()
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    if request_ids:
        # Every response carries X-Request-ID (the client's, when it sent a valid one), and
        # the error logs name it: a user's report of a failed request finds its log line.
        app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    return app
