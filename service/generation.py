"""The body of the Generator deployment: an engine plus adapter notifications.

``GeneratorCore`` runs a ``GenerationEngine`` (today's ``BatchingEngine`` by
default) and prefetches newly published adapters into it. The Ray Serve
``Generator`` deployment wraps it; tests and benchmarks run it in-process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator

import redis

from contracts.adapter_store import AdapterError
from contracts.keys import ADAPTER_CHANNEL
from contracts.settings import Settings
from service.batching_engine import BatchingEngine
from service.engine_interface import GenerationEngine, GenerationEvent, GenerationRequest

log = logging.getLogger(__name__)


class GeneratorCore:
    def __init__(
        self, settings: Settings, engine_cls: type[GenerationEngine] = BatchingEngine
    ) -> None:
        self.settings = settings
        self.engine = engine_cls(settings)
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, listen_for_adapters: bool = True) -> None:
        self.engine.start()
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
        return self.engine.metrics_text()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async for event in self.engine.generate(request):
            yield event

    def _listen(self) -> None:
        """Prefetch a newly published adapter into the cache (the notification path).

        Correctness does not depend on this: every request carries the version the
        Ingress read from Redis, so a missed message only costs a load on first use.
        """
        client = redis.Redis.from_url(self.settings.effective_redis_url)
        outage = False  # logged once per outage, not once per retry
        while not self._stopping.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(ADAPTER_CHANNEL)
                if outage:
                    log.warning("adapter notifications: Redis is back; subscribed again")
                    outage = False
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)  # wakes up to see stop()
                    if message is not None:
                        self._on_adapter_message(message["data"].decode())
            except redis.RedisError as err:  # e.g. Redis restarting: resubscribe
                if not outage and not self._stopping.is_set():
                    log.warning("adapter notifications: %s; resubscribing every second "
                                "until Redis is back", err)
                outage = True
                self._stopping.wait(1.0)
            finally:
                pubsub.close()
        client.close()

    def _on_adapter_message(self, data: str) -> None:
        user_id, _, version = data.partition(" ")
        try:  # an empty version: the user was forgotten
            self.engine.load_adapter(user_id, version or None)
        except AdapterError as err:
            log.warning("prefetch of %s/%s failed: %s", user_id, version, err)
