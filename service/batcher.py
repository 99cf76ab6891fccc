"""Form batches from concurrent requests and stream their text back, asyncio side.

Requests from any number of users queue here; a background task takes up to
``max_batch_size`` rows (a request with ``n`` choices is ``n`` rows), waiting at
most ``batch_wait_ms`` after the first for more to arrive, and runs the batch on
one engine thread. Users are an ordinary field of each request, so one batch
mixes adapters freely (DESIGN.md decision 3: no ``@serve.multiplexed``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.engine import Engine, GenerationRequest, GenerationResult


@dataclass
class TextDelta:
    choice_index: int
    text: str


@dataclass
class _Pending:
    request: GenerationRequest
    events: asyncio.Queue
    enqueued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(
        self, engine: Engine, max_batch_size: int, batch_wait_ms: float, observer=None
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.observer = observer  # called with (rows, requests) per batch; metrics hook
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TextDelta | GenerationResult]:
        """Yield text deltas as they appear (if streamed), then the final result."""
        if request.n > self.max_batch_size:
            raise ValueError(f"n={request.n} exceeds the batch size {self.max_batch_size}")
        self.start()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        if request.on_delta is not None:
            request.on_delta = lambda choice, text: loop.call_soon_threadsafe(
                events.put_nowait, TextDelta(choice, text)
            )
        self._queue.append(_Pending(request, events))
        self._wakeup.set()
        while True:
            event = await events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, GenerationResult):
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._queue[0].enqueued_at + self.batch_wait_s
            while self._rows_queued() < self.max_batch_size and time.perf_counter() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
                except TimeoutError:
                    break
            batch = self._take_batch()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.engine.generate_batch, [p.request for p in batch]
                )
            except Exception as err:  # one bad batch fails its requests, not the server
                for pending in batch:
                    pending.events.put_nowait(err)
                continue
            if self.observer is not None:
                self.observer(sum(p.request.n for p in batch), [p.request for p in batch])
            for pending, outcome in zip(batch, results, strict=True):
                pending.events.put_nowait(outcome)  # a result, or that request's error

    def _rows_queued(self) -> int:
        return sum(p.request.n for p in self._queue)

    def _take_batch(self) -> list[_Pending]:
        batch, rows = [], 0
        while self._queue and rows + self._queue[0].request.n <= self.max_batch_size:
            pending = self._queue.popleft()
            batch.append(pending)
            rows += pending.request.n
        return batch
