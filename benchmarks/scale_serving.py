"""`tailor bench scale`, serving: many users' adapters over the slots and the host tier.

N distinct users (N = 32, 256, 1024 by default) send one request at a time, each
user's own adapter, chosen round robin (the worst case for an LRU: every user comes
back only after all the others) or Zipf-skewed (a few users send most requests, as
real traffic does). Per request: the time to its first token, which includes
bringing the adapter into a slot. Three tiers of the same engine:

- ``slots``: the slots alone (``TAILOR_ADAPTER_CACHE_SIZE``), every miss reads the store;
- ``slots+host``: the slots behind the host-memory tier (``TAILOR_ADAPTER_HOST_CACHE_SIZE``);
- ``all_cached``: every adapter in a slot beforehand, the baseline: what a request costs
  when no adapter has to move.

Reported per case: each tier's hit rate (slot hits of all requests; host hits of the
slot misses) and time to first token p50/p95, with its ratio to the all-cached case
measured in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

from benchmarks.serve import PROMPTS, make_random_adapter
from contracts.adapter_store import AdapterStore
from contracts.feedback_lag import lag_quantile
from contracts.settings import Settings
from service.engine import Engine, EngineRequest
from service.engine_interface import SamplingParams

TIERS = ("slots", "slots+host", "all_cached")
PATTERNS = ("round_robin", "zipf")
ZIPF_S = 1.1  # P(k-th most active user) ∝ k^-1.1


@dataclass(frozen=True)
class TierCase:
    tier: str
    adapters: int
    pattern: str
    requests: int
    slot_hit_rate: float
    host_hit_rate: float | None  # of the slot misses; None without a host tier
    ttft_p50_s: float
    ttft_p95_s: float


def user_sequence(pattern: str, adapters: int, requests: int, seed: int = 0) -> list[int]:
    """Which user sends each request."""
    if pattern == "round_robin":
        return [i % adapters for i in range(requests)]
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, adapters + 1) ** ZIPF_S
    return rng.choice(adapters, size=requests, p=weights / weights.sum()).tolist()


def fill_store(store: AdapterStore, template: Path, adapters: int, workdir: Path) -> None:
    """``adapters`` users' adapters in the store: the template's config, random weights."""
    tensors = load_file(template / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(1)
    for user in range(adapters):
        folder = workdir / "adapter"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(template, folder)
        save_file({name: torch.randn(t.shape, generator=generator) * 0.05
                   for name, t in tensors.items()}, folder / "adapter_model.safetensors")
        store.put(f"user{user}", "v1", folder)


def run_case(settings: Settings, tier: str, adapters: int, pattern: str, requests: int,
             prompt_text: str) -> TierCase:
    slots = adapters if tier == "all_cached" else settings.adapter_cache_size
    host = settings.adapter_host_cache_size if tier == "slots+host" else 0
    engine = Engine(settings.model_copy(update={"adapter_cache_size": slots,
                                                "adapter_host_cache_size": host}))
    engine.start()
    prompt = engine.encode_chat([{"role": "user", "content": prompt_text}])
    params = SamplingParams(max_tokens=1, temperature=1.0, seed=0, ignore_eos=True)

    def ask(user: int) -> float:
        started = time.perf_counter()
        engine.generate_batch([EngineRequest(prompt, params, user_id=f"user{user}",
                                             adapter_version="v1", record_features=False)])
        return time.perf_counter() - started

    cache = engine.cache
    assert cache is not None
    if tier == "all_cached":
        for user in range(adapters):
            cache.release(cache.acquire(f"user{user}", "v1"))
    users = user_sequence(pattern, adapters, 2 * requests)
    for user in users[:requests]:  # warm-up: the tiers reach their steady state
        ask(user)
    hits, misses, host_hits = cache.hits, cache.misses, cache.host.hits
    ttfts = [ask(user) for user in users[requests:]]
    slot_misses = cache.misses - misses
    return TierCase(
        tier, adapters, pattern, requests,
        slot_hit_rate=(cache.hits - hits) / requests,
        host_hit_rate=((cache.host.hits - host_hits) / slot_misses if slot_misses else 1.0)
        if host else None,
        ttft_p50_s=statistics.median(ttfts), ttft_p95_s=lag_quantile(ttfts, 0.95))


def run_bench_scale_serving(adapter_counts: list[int], requests: int, console: Console
                            ) -> list[TierCase]:
    torch.set_num_threads(1)
    settings = Settings()
    workdir = Path(tempfile.mkdtemp(prefix="tailor-bench-scale-"))
    try:
        store_uri = str(workdir / "store")
        settings = settings.model_copy(update={"adapter_store": store_uri})
        template = make_random_adapter(settings.base_model_path, workdir / "template", 0,
                                       settings.lora_target_modules, settings.lora_rank,
                                       settings.lora_alpha)
        with console.status(f"writing {max(adapter_counts)} adapters to the store ..."):
            fill_store(AdapterStore(store_uri), template, max(adapter_counts), workdir)
        cases = []
        for adapters in adapter_counts:
            for pattern in PATTERNS:
                for tier in TIERS:
                    with console.status(f"{adapters} adapters, {pattern}, {tier} ..."):
                        cases.append(run_case(settings, tier, adapters, pattern, requests,
                                              PROMPTS[0]))
        print_cases(cases, settings, console)
        return cases
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_cases(cases: list[TierCase], settings: Settings, console: Console) -> None:
    baseline = {(c.adapters, c.pattern): c for c in cases if c.tier == "all_cached"}
    table = Table(title=f"adapters over the tiers: {settings.adapter_cache_size} slots, "
                  f"{settings.adapter_host_cache_size} in host memory; one request at a time, "
                  f"time to first token ({cases[0].requests} timed after as many warm-up)")
    for column in ("adapters", "pattern", "tier"):
        table.add_column(column, no_wrap=True)
    for column in ("slot hits", "host hits (of misses)", "TTFT p50 ms", "TTFT p95 ms",
                   "p95 / all cached"):
        table.add_column(column, justify="right")
    for case in cases:
        base = baseline[(case.adapters, case.pattern)]
        table.add_row(
            str(case.adapters), case.pattern, case.tier, f"{case.slot_hit_rate:.0%}",
            "-" if case.host_hit_rate is None else f"{case.host_hit_rate:.0%}",
            f"{case.ttft_p50_s * 1000:.1f}", f"{case.ttft_p95_s * 1000:.1f}",
            f"{case.ttft_p95_s / base.ttft_p95_s:.2f}")
    console.print(table)


def figures(cases: list[TierCase]) -> dict:
    """``{"ttft_p95_s": {tier: {adapters: {pattern: s}}}, ...}`` for ``--json``."""
    out: dict[str, dict] = {"ttft_p95_s": {}, "ttft_p50_s": {}, "slot_hit_rate": {},
                            "host_hit_rate": {}}
    for case in cases:
        for key, value in (("ttft_p95_s", case.ttft_p95_s), ("ttft_p50_s", case.ttft_p50_s),
                           ("slot_hit_rate", case.slot_hit_rate),
                           ("host_hit_rate", case.host_hit_rate)):
            if value is not None:
                out[key].setdefault(case.tier, {}).setdefault(str(case.adapters), {})[
                    case.pattern] = value
    return out
