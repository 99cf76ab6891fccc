"""The generation side of the service: engine + batcher + adapter notifications.

``GeneratorCore`` is what the Ray Serve ``Generator`` deployment wraps, and
what tests and benchmarks run in-process. Failures are yielded as values
(``GenerationFailure``) rather than raised, so they cross a Ray handle intact.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import redis
from prometheus_client import generate_latest

from contracts.adapter_store import AdapterError
from contracts.keys import ADAPTER_CHANNEL
from contracts.settings import Settings
from service.batcher import Batcher, TextDelta
from service.engine import Engine, GenerationRequest, GenerationResult, SamplingParams
from service.metrics import GeneratorMetrics

log = logging.getLogger(__name__)


@dataclass
class GenerationFailure:
    status: int
    message: str
    param: str | None = None
    code: str | None = None


@dataclass
class GenerationOutput:
    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    prompt_token_ids: list[int]
    adapter_version: str | None
    features: np.ndarray | None
    first_token_s: float | None  # at the Generator: arrival -> first token
    finished_s: float | None  # at the Generator: arrival -> result

    @property
    def completion_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


class GeneratorCore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.metrics = GeneratorMetrics()
        self.batcher: Batcher | None = None
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self._cache_seen = (0, 0, 0, 0)

    def start(self, listen_for_adapters: bool = True) -> None:
        self.engine.start()
        self.batcher = Batcher(
            self.engine, self.settings.max_batch_size, self.settings.batch_wait_ms, self._observe,
            continuous=self.settings.continuous_batching,
        )
        if listen_for_adapters:
            self._listener = threading.Thread(target=self._listen, daemon=True, name="adapters")
            self._listener.start()

    def stop(self) -> None:
        """End the adapter listener. Its Redis connection is closed by its own thread:
        one left to the garbage collector at interpreter exit can deadlock on the
        connection pool's lock held by a frozen daemon thread (seen as a test run
        that printed its summary and never exited)."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(timeout=5)

    async def ready(self) -> bool:
        return self.engine.check_health()

    async def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)

    async def generate(
        self,
        messages: list[dict],
        params: SamplingParams,
        n: int,
        user_id: str | None,
        adapter_version: str | None,
        stream: bool,
    ) -> AsyncIterator[TextDelta | GenerationOutput | GenerationFailure]:
        assert self.batcher is not None, "GeneratorCore.start() first"
        prompt_ids = self.engine.encode_chat(messages)
        if len(prompt_ids) > self.settings.max_prompt_tokens:
            yield GenerationFailure(
                400,
                f"the prompt has {len(prompt_ids)} tokens, more than the "
                f"{self.settings.max_prompt_tokens} this server accepts; shorten the messages",
                param="messages",
                code="context_length_exceeded",
            )
            return
        request = GenerationRequest(
            prompt_ids=prompt_ids,
            params=params,
            n=n,
            user_id=user_id,
            adapter_version=adapter_version,
            on_delta=(lambda choice, text: None) if stream else None,
        )
        try:
            async for event in self.batcher.generate(request):
                if isinstance(event, TextDelta):
                    yield event
                elif isinstance(event, AdapterError):
                    log.error("adapter %s/%s: %s", user_id, adapter_version, event)
                    yield GenerationFailure(503, f"the user's adapter could not be loaded: {event}")
                    return
                else:
                    yield _output(event, prompt_ids)
        except ValueError as err:
            yield GenerationFailure(400, str(err), param="n")

    def _observe(self, rows: int, requests: list[GenerationRequest]) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_adapters.observe(len({r.adapter_version for r in requests if r.adapter_version}))
        cache = self.engine.cache
        now = (cache.hits, cache.misses, cache.loads, cache.evictions)
        for name, before, after in zip(("hit", "miss", "load", "eviction"), self._cache_seen, now):
            if after > before:
                self.metrics.adapter_cache.labels(event=name).inc(after - before)
        self._cache_seen = now
        self.metrics.adapters_cached.set(len(cache.cached()))

    def _listen(self) -> None:
        """Prefetch a newly published adapter into the cache (the notification path).

        Correctness does not depend on this: every request carries the version the
        Ingress read from Redis, so a missed message only costs a load on first use.
        """
        client = redis.Redis.from_url(self.settings.effective_redis_url)
        while not self._stopping.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(ADAPTER_CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)  # wakes up to see stop()
                    if message is not None:
                        self._on_adapter_message(message["data"].decode())
            except redis.RedisError as err:  # e.g. Redis restarting: resubscribe
                log.warning("adapter notifications: %s; resubscribing", err)
                self._stopping.wait(1.0)
            finally:
                pubsub.close()
        client.close()

    def _on_adapter_message(self, data: str) -> None:
        user_id, _, version = data.partition(" ")
        if not version:  # the user was forgotten
            self.engine.cache.drop_user(user_id)
            return
        try:
            self.engine.load_adapter(user_id, version)
        except AdapterError as err:
            log.warning("prefetch of %s/%s failed: %s", user_id, version, err)


def _output(result: GenerationResult, prompt_ids: list[int]) -> GenerationOutput:
    return GenerationOutput(
        texts=[c.text for c in result.choices],
        token_ids=[c.token_ids for c in result.choices],
        finish_reasons=[c.finish_reason for c in result.choices],
        prompt_token_ids=prompt_ids,
        adapter_version=result.adapter_version,
        features=result.features,
        first_token_s=result.first_token_s,
        finished_s=result.finished_s,
    )
