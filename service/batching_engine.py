"""Today's engine behind the Generator deployment: transformers, LoRA slots, continuous batching.

It implements ``GenerationEngine`` with the token-level ``Engine`` (the running
batch, this process's model) and the asyncio ``Batcher`` that feeds it from
concurrent requests. Chat messages are tokenized here, with the model's chat
template, because the prompt-length limit is counted in this model's tokens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from prometheus_client import generate_latest

from contracts.adapter_store import AdapterError
from contracts.settings import Settings
from service.batcher import Batcher, QueueFull
from service.engine import Engine, EngineRequest
from service.engine_interface import (
    GenerationEvent,
    GenerationFailure,
    GenerationRequest,
)
from service.metrics import GeneratorMetrics

log = logging.getLogger(__name__)
# A full queue drains within a few decode steps' time: a second is a fair first wait.
QUEUE_RETRY_AFTER_S = 1


class BatchingEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = Engine(settings)
        self.metrics = GeneratorMetrics()
        self.batcher: Batcher | None = None
        self._cache_seen = (0, 0, 0, 0)
        self._host_seen = (0, 0, 0)

    def start(self) -> None:
        self.engine.start()
        self.batcher = Batcher(
            self.engine, self.settings.max_batch_size, self.settings.batch_wait_ms, self._observe,
            continuous=self.settings.continuous_batching,
            max_queued_rows=self.settings.max_queued_rows,
        )

    def check_health(self) -> bool:
        return self.engine.check_health()

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)

    def load_adapter(self, user_id: str, version: str | None) -> None:
        if version is None:
            self.engine.cache.drop_user(user_id)
        else:
            self.engine.load_adapter(user_id, version)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        assert self.batcher is not None, "BatchingEngine.start() first"
        prompt_ids = self.engine.encode_chat(request.messages)
        # At least one token must fit in the model's context after the prompt.
        limit = min(self.settings.max_prompt_tokens, self.engine.context_tokens - 1)
        if len(prompt_ids) > limit:
            context = (f" (the model's context is {self.engine.context_tokens} tokens, the "
                       "answer included)" if limit < self.settings.max_prompt_tokens else "")
            yield GenerationFailure(
                400,
                f"the prompt has {len(prompt_ids)} tokens, more than the {limit} this server "
                f"accepts{context}; shorten the messages",
                param="messages",
                code="context_length_exceeded",
            )
            return
        engine_request = EngineRequest(
            prompt_ids=prompt_ids,
            params=request.params,
            n=request.n,
            user_id=request.user_id,
            adapter_version=request.adapter_version,
            # the Batcher replaces it with one that feeds this request's events
            on_delta=(lambda choice, text: None) if request.stream else None,
        )
        try:
            async for event in self.batcher.generate(engine_request):
                yield event
        except AdapterError as err:  # the Batcher raises it in the request's task
            log.error("adapter %s/%s: %s", request.user_id, request.adapter_version, err)
            yield GenerationFailure(503, f"the user's adapter could not be loaded: {err}")
        except QueueFull as err:
            self.metrics.queue_full.inc()
            yield GenerationFailure(429, f"the server is busy: {err}; retry shortly",
                                    code="rate_limit_exceeded", retry_after_s=QUEUE_RETRY_AFTER_S)
        except ValueError as err:  # n above the batch size
            yield GenerationFailure(400, str(err), param="n")

    def _observe(self, rows: int, requests: list[EngineRequest]) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.batch_adapters.observe(
            len({r.adapter_version for r in requests if r.adapter_version}))
        cache = self.engine.cache
        now = (cache.hits, cache.misses, cache.loads, cache.evictions)
        for name, before, after in zip(("hit", "miss", "load", "eviction"), self._cache_seen, now):
            if after > before:
                self.metrics.adapter_cache.labels(event=name).inc(after - before)
        self._cache_seen = now
        self.metrics.adapters_cached.set(len(cache.cached()))
        host = cache.host
        now = (host.hits, host.misses, host.evictions)
        for name, before, after in zip(("hit", "miss", "eviction"), self._host_seen, now):
            if after > before:
                self.metrics.adapter_host_cache.labels(event=name).inc(after - before)
        self._host_seen = now
        self.metrics.adapters_host_cached.set(len(host.cached()))
        self.metrics.adapter_host_bytes.set(host.nbytes())
