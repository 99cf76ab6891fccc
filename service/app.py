"""The Ray Serve application: an ``Ingress`` (FastAPI, no model) and a ``Generator`` (the model).

``build_app(args)`` is the typed builder that ``serve run deploy/serve.yaml``, the
RayService and ``tailor up`` all use. ``args`` are ``Settings`` field names
overriding the environment. Each Generator replica batches the requests of all
users together (see ``batcher.py``); the Ingress resolves the user and their
adapter version, records completions and takes feedback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import torch
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import Application
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from contracts.settings import Settings
from service.api import create_api
from service.batching_engine import QUEUE_RETRY_AFTER_S, BatchingEngine
from service.engine_interface import (
    GenerationEngine,
    GenerationEvent,
    GenerationFailure,
    GenerationRequest,
)
from service.feedback_store import FeedbackStore
from service.generation import GeneratorCore

APP_NAME = "tailor"
log = logging.getLogger(__name__)


@serve.deployment(name="Generator", health_check_period_s=10)
class Generator:
    """Runs ``engine_cls`` on settings that ``build_app`` validated (never re-read here)."""

    def __init__(
        self, settings: Settings, engine_cls: type[GenerationEngine] = BatchingEngine
    ) -> None:
        # Ray gives a replica a CPU budget, not a thread pool: keep torch inside it.
        torch.set_num_threads(settings.torch_threads)
        self.core = GeneratorCore(settings, engine_cls)
        self.core.start()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async for event in self.core.generate(request):
            yield event

    async def ready(self) -> bool:
        return await self.core.ready()

    async def metrics_text(self) -> bytes:
        return await self.core.metrics_text()

    def __del__(self) -> None:  # Serve calls it when the replica shuts down
        if hasattr(self, "core"):  # not when __init__ failed
            self.core.stop()

    async def check_health(self) -> None:
        if not await self.core.ready():
            raise RuntimeError("model not loaded")


class HandleBackend:
    """The Generator deployment seen through a Ray Serve handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """The Generator's events; a replica lost before its first event is retried once
        (Serve routes the retry to a live replica), one lost later ends in a 503."""
        for attempt in (1, 2):
            answered = False
            try:
                async for event in self.handle.options(stream=True).generate.remote(request):
                    answered = True
                    yield event
                return
            except BackPressureError as err:  # the Generator's max_queued_requests (serve.yaml)
                yield GenerationFailure(
                    429, f"the server is busy: {err}; retry shortly", code="rate_limit_exceeded",
                    retry_after_s=QUEUE_RETRY_AFTER_S)
                return
            except RayActorError as err:
                if answered or attempt == 2:
                    log.error("generator replica lost %s: %s",
                              "mid-answer" if answered else "twice", err)
                    yield GenerationFailure(
                        503, "the model server handling this request was lost; retry it",
                        code="replica_lost", retry_after_s=1)
                    return
                log.warning("generator replica lost before answering; retrying once: %s", err)

    async def ready(self) -> bool:
        return await self.handle.ready.remote()

    async def metrics_text(self) -> bytes:
        return await self.handle.metrics_text.remote()


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, generator: DeploymentHandle, settings: Settings) -> None:
        store = FeedbackStore.from_url(settings.effective_redis_url, settings.completion_ttl_s,
                                       settings.redis_timeout_s)
        # Serve's proxy gives each request its X-Request-ID (ray.serve's RequestIdMiddleware)
        self.api = create_api(settings, HandleBackend(generator), store, request_ids=False)

    def __serve_build_asgi_app__(self):
        return self.api

    async def drain(self, timeout_s: float) -> int:
        """Refuse new requests, wait for those in flight (``service.draining``); how many
        are left after ``timeout_s``. The runner calls it before ``serve.shutdown()``."""
        return await self.api.state.drain.drain(timeout_s)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Tailor application; ``args`` override the environment's settings.

    Settings are validated here, once, where ``serve run``/``serve deploy`` and the
    RayService build the app, so a bad value fails the deploy rather than a
    replica; the replicas get the validated ``Settings`` object itself (pickled,
    not re-read from each replica's environment). Ray Serve calls a builder with
    the ``args`` dict only: another engine is given to ``application``.
    """
    return application(Settings(**(args or {})))


def application(
    settings: Settings, engine_cls: type[GenerationEngine] = BatchingEngine
) -> Application:
    """The deployments of ``build_app``, running ``engine_cls`` in each Generator replica."""
    generator = Generator.options(
        num_replicas=settings.num_replicas,
        # Enough in flight that a replica can fill a batch of max_batch_size rows, and more
        # than its Batcher admits (a batch running, max_queued_rows waiting), so that its
        # bound is what refuses a burst with 429; at Serve's own bound the excess would wait
        # in the Ingress. That wait is bounded too (max_queued_requests: BackPressureError,
        # answered 429 by HandleBackend), never a queue that grows every latency.
        max_ongoing_requests=max(4 * settings.max_batch_size,
                                 settings.max_queued_rows + 2 * settings.max_batch_size),
        max_queued_requests=settings.max_queued_rows,
        # a replica Serve stops (rolling update, shutdown) finishes what it has first
        graceful_shutdown_timeout_s=settings.drain_timeout_s,
        graceful_shutdown_wait_loop_s=0.5,
        ray_actor_options={
            "num_cpus": settings.replica_num_cpus,
            "num_gpus": settings.replica_num_gpus,
        },
    ).bind(settings, engine_cls)
    return Ingress.options(
        max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.1},
        graceful_shutdown_timeout_s=settings.drain_timeout_s, graceful_shutdown_wait_loop_s=0.5,
    ).bind(generator, settings)
