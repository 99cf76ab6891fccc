"""`tailor bench serve`, part two: latency under a stream of arrivals.

Requests of mixed lengths (most short, some long, EOS ignored) arrive one every
``gap_s`` with a different adapter each, and go through the real ``Batcher`` on
the same engine twice, once with continuous batching and once with whole
batches (each runs to its end before the next starts). Same arrival times, same
requests, same seeds. What differs is only when a request may enter the batch,
so the ratios are what continuous batching buys, and costs: it measures, per
length, latency (arrival -> result) and time to first token (arrival -> first
streamed text). Features are not recorded here, in either mode.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from service.batcher import Batcher
from service.engine import Engine, EngineRequest
from service.engine_interface import SamplingParams, TextDelta


@dataclass
class ArrivalStats:
    mean_s: float  # latency, arrival -> result
    p95_s: float
    ttft_mean_s: float  # arrival -> first streamed text
    mean_by_length_s: dict[int, float]  # latency per max_tokens
    tokens_per_s: float


def arrival_requests(prompts: list[list[int]], count: int, short: int, long: int,
                     long_share: float, seed: int = 0) -> list[EngineRequest]:
    """``count`` requests over ``prompts``, one adapter per prompt index, mixed lengths."""
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(count):
        tokens = long if rng.random() < long_share else short
        requests.append(EngineRequest(
            prompts[i % len(prompts)],
            SamplingParams(max_tokens=tokens, temperature=1.0, seed=i, ignore_eos=True),
            user_id=f"user{i % len(prompts)}", adapter_version="v1", record_features=False,
            on_delta=lambda choice, text: None,  # streamed, for the time to first token
        ))
    return requests


def run_arrivals(engine: Engine, requests: list[EngineRequest], gap_s: float,
                 max_batch_size: int, continuous: bool) -> ArrivalStats:
    latencies: dict[int, list[float]] = defaultdict(list)  # by max_tokens
    first_text: dict[int, float] = {}  # id(request) -> seconds
    tokens = 0

    async def one(batcher: Batcher, request: EngineRequest, delay: float) -> None:
        nonlocal tokens
        await asyncio.sleep(delay)
        arrived = time.perf_counter()
        async for event in batcher.generate(request):
            if isinstance(event, TextDelta):
                first_text.setdefault(id(request), time.perf_counter() - arrived)
            else:
                tokens += event.completion_tokens
        latencies[request.params.max_tokens].append(time.perf_counter() - arrived)

    async def main() -> float:
        batcher = Batcher(engine, max_batch_size, batch_wait_ms=0, continuous=continuous)
        started = time.perf_counter()
        await asyncio.gather(*(one(batcher, r, i * gap_s) for i, r in enumerate(requests)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    every = sorted(x for values in latencies.values() for x in values)
    return ArrivalStats(
        mean_s=statistics.fmean(every),
        p95_s=every[min(len(every) - 1, int(0.95 * len(every)))],
        ttft_mean_s=statistics.fmean(first_text.values()),
        mean_by_length_s={length: statistics.fmean(v) for length, v in sorted(latencies.items())},
        tokens_per_s=tokens / elapsed,
    )


def median_stats(runs: list[ArrivalStats]) -> ArrivalStats:
    """Each figure's median over ``runs`` of the same schedule."""
    def median(figure) -> float:
        return statistics.median(figure(run) for run in runs)

    return ArrivalStats(
        mean_s=median(lambda r: r.mean_s),
        p95_s=median(lambda r: r.p95_s),
        ttft_mean_s=median(lambda r: r.ttft_mean_s),
        mean_by_length_s={length: median(lambda r, n=length: r.mean_by_length_s[n])
                          for length in runs[0].mean_by_length_s},
        tokens_per_s=median(lambda r: r.tokens_per_s),
    )
