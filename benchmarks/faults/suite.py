"""The order and the sizes of `tailor check-faults`; its fast part runs in `make test`.

Order: the sustained loads first (memory measured on a fresh stack), then the burst,
the Generator kill, the Redis kill, and the fuzzer last (its judgments would join
the feedback stream the Redis fault counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.faults.fuzz import run_fuzzer
from benchmarks.faults.scenarios import (
    RedisControl,
    burst_above_queue_bound,
    generator_killed_under_load,
    redis_killed_under_feedback,
    sustained_load,
)
from benchmarks.faults.stack import TailorProcess

FAULTS = ("burst", "generator", "redis", "fuzz")


@dataclass
class SuiteConfig:
    load_clients: tuple[int, ...] = (16, 64)  # one sustained load per entry
    load_duration_s: float = 120.0  # each sustained load
    fault_clients: int = 16
    fault_duration_s: float = 45.0  # each fault's load (the Generator's reload fits in it)
    max_tokens: int = 16  # per chat request
    queue_bound: int = 64  # TAILOR_MAX_QUEUED_ROWS of the stack under test
    max_batch_size: int = 16  # TAILOR_MAX_BATCH_SIZE of the stack under test
    burst_factor: int = 3  # the burst: this many times (bound + batch) requests at once
    fuzz_examples: int = 25  # per operation
    faults: tuple[str, ...] = FAULTS
    work_dir: Path = field(default_factory=lambda: Path(".tailor") / "check-faults")

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"faults {sorted(unknown)} unknown; choose among {', '.join(FAULTS)}")
        if any(c < 1 for c in (*self.load_clients, self.fault_clients)):
            raise ValueError("clients must be 1 or more")

    def tailor_env(self) -> dict[str, str]:
        """The settings of the stack under test: short answers, a bound the burst exceeds."""
        return {"TAILOR_MAX_QUEUED_ROWS": str(self.queue_bound),
                "TAILOR_MAX_BATCH_SIZE": str(self.max_batch_size),
                # the fuzzer's chat requests may ask for the most: keep that short on CPU
                "TAILOR_MAX_TOKENS_LIMIT": str(max(64, self.max_tokens)), "TAILOR_MAX_N": "4"}


def run_suite(tailor: TailorProcess, redis_server: RedisControl, config: SuiteConfig,
              progress: Callable[[str], None] = print) -> dict:
    """Each part's figures by name (``load_16``, ``burst``, ...), each with ``ok``. A client
    count given again (``--clients 16,16,16``: is memory still growing?) gets ``load_16_2``..."""
    results: dict = {}
    for clients in config.load_clients:
        progress(f"sustained load: {clients} clients for {config.load_duration_s:g} s")
        name, repeat = f"load_{clients}", 1
        while name in results:
            repeat += 1
            name = f"load_{clients}_{repeat}"
        results[name] = sustained_load(tailor, redis_server, clients,
                                                    config.load_duration_s, config.max_tokens)
    if "burst" in config.faults:
        size = config.burst_factor * (config.queue_bound + config.max_batch_size)
        progress(f"burst: {size} requests at once (queue bound {config.queue_bound} rows)")
        results["burst"] = burst_above_queue_bound(tailor, size, config.max_tokens)
    if "generator" in config.faults:
        progress(f"Generator replica SIGKILLed under {config.fault_clients} clients")
        results["generator_killed"] = generator_killed_under_load(
            tailor, config.fault_clients, config.fault_duration_s, config.max_tokens)
    if "redis" in config.faults:
        progress(f"Redis SIGKILLed and restarted under {config.fault_clients} feedback clients")
        results["redis_killed"] = redis_killed_under_feedback(
            tailor, redis_server, config.fault_clients, config.fault_duration_s)
    if "fuzz" in config.faults and config.fuzz_examples > 0:
        progress(f"schemathesis: {config.fuzz_examples} examples per operation")
        fuzzed = run_fuzzer(tailor.url, config.fuzz_examples, config.work_dir / "fuzz")
        results["fuzz"] = {**fuzzed.summary(), "ok": fuzzed.returncode == 0
                           and fuzzed.server_errors == 0 and fuzzed.requests > 0}
    return results
