"""Feed the engine's running batch from concurrent requests, asyncio side.

Requests from any number of users queue here. One background task owns the
engine: when the engine is idle it waits at most ``batch_wait_ms`` after the
first request for more to arrive, then admits up to ``max_batch_size`` rows (a
request with ``n`` choices is ``n`` rows) and decodes on one engine thread.
With ``continuous`` on (the default), the engine thread goes back to the queue
between decode steps: queued requests that fit in the free rows join the batch
at once, and each request's result is delivered the step it finishes. With it
off, a batch runs to its end before the next one starts (the baseline that
``tailor bench serve`` compares against). Users are an ordinary field of each
request, so one batch mixes adapters freely (DESIGN.md decision 3: no
``@serve.multiplexed``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service.engine import Engine, EngineRequest
from service.engine_interface import GenerationResult, TextDelta


class QueueFull(Exception):
    """More rows wait than the replica lets wait (``max_queued_rows``)."""


@dataclass
class _Pending:
    request: EngineRequest
    events: asyncio.Queue

    @property
    def enqueued_at(self) -> float:
        return self.request.arrived_at


class Batcher:
    def __init__(
        self, engine: Engine, max_batch_size: int, batch_wait_ms: float, observer=None,
        continuous: bool = True, max_queued_rows: int | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queued_rows = max_queued_rows  # None: no bound
        self.batch_wait_s = batch_wait_ms / 1000
        self.continuous = continuous
        # Called from the engine thread with (rows, requests) running after each
        # admission; the metrics hook.
        self.observer = observer
        self._queue: deque[_Pending] = deque()
        self._running: dict[int, _Pending] = {}  # id(request) -> its pending entry
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run())

    async def generate(self, request: EngineRequest) -> AsyncIterator[TextDelta | GenerationResult]:
        """Yield text deltas as they appear (if streamed), then the final result."""
        if request.n > self.max_batch_size:
            raise ValueError(f"n={request.n} exceeds the batch size {self.max_batch_size}")
        queued = self._rows_queued()
        if self.max_queued_rows is not None and queued + request.n > self.max_queued_rows:
            # Refuse now: waiting behind a queue this long would only raise everyone's latency.
            raise QueueFull(f"{queued} rows already wait for this replica (limit "
                            f"{self.max_queued_rows})")
        self.start()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        if request.on_delta is not None:
            request.on_delta = lambda choice, text: loop.call_soon_threadsafe(
                events.put_nowait, TextDelta(choice, text)
            )
        request.arrived_at = time.perf_counter()
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
            # The engine is idle here: give a burst of requests a moment to arrive together.
            deadline = self._queue[0].enqueued_at + self.batch_wait_s
            while self._rows_queued() < self.max_batch_size and time.perf_counter() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - time.perf_counter())
                except TimeoutError:
                    break
            try:
                await loop.run_in_executor(self._executor, self._drive, self._take(self.max_batch_size))
            except Exception as err:  # an engine failure fails the requests it held, not the server
                self.engine.abort()
                for pending in self._running.values():
                    self._deliver(pending, err)
                self._running.clear()

    def _drive(self, first: list[_Pending]) -> None:
        """Engine thread: admit ``first``, then decode until the engine is idle again."""
        self._admit(first)
        while self.engine.running_rows or self._running:
            for request, result in self.engine.step():
                self._deliver(self._running.pop(id(request)), result)
            if self.continuous and self.engine.can_join:
                free = self.max_batch_size - self.engine.running_rows
                if self._queue and self._queue[0].request.n <= free:
                    self._admit(self._take(free))

    def _admit(self, batch: list[_Pending]) -> None:
        for pending in batch:
            self._running[id(pending.request)] = pending
        errors = self.engine.admit([pending.request for pending in batch])
        for pending, error in zip(batch, errors, strict=True):
            if error is not None:  # that request's adapter could not be loaded
                self._deliver(self._running.pop(id(pending.request)), error)
        if self.observer is not None:
            requests = [pending.request for pending in self._running.values()]
            self.observer(sum(r.n for r in requests), requests)

    def _deliver(self, pending: _Pending, outcome) -> None:
        """A result or an error, handed to the request's task on the event loop."""
        self._loop.call_soon_threadsafe(pending.events.put_nowait, outcome)

    def _rows_queued(self) -> int:
        return sum(p.request.n for p in self._queue)

    def _take(self, free_rows: int) -> list[_Pending]:
        """Queued requests, oldest first, while they fit in ``free_rows``.

        Runs on the engine thread between steps as well as on the event loop; the
        event loop only appends meanwhile, and deque appends and pops are atomic.
        """
        batch, rows = [], 0
        while self._queue and rows + self._queue[0].request.n <= free_rows:
            pending = self._queue.popleft()
            batch.append(pending)
            rows += pending.request.n
        return batch
