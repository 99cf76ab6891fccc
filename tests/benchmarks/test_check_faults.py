"""The fast part of `make check-faults`: `tailor up` under a short load at 4 clients, then
Redis SIGKILLed and restarted under feedback load. The whole suite (16 and 64 clients for
minutes, a burst, a Generator killed, the fuzzer) is `make check-faults`, not `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults.stack import TailorProcess
from benchmarks.faults.suite import SuiteConfig, run_suite

pytestmark = pytest.mark.slow


def test_a_short_load_and_a_redis_crash_keep_every_promise(serving_model_dir: Path, fresh_redis,
                                                           tmp_path: Path) -> None:
    config = SuiteConfig(load_clients=(4,), load_duration_s=10, fault_clients=4,
                         fault_duration_s=12, faults=("redis",), work_dir=tmp_path)
    tailor = TailorProcess(tmp_path / "tailor", fresh_redis.url,
                           config.tailor_env() | {"TAILOR_BASE_MODEL": str(serving_model_dir)})
    try:
        tailor.start()
        results = run_suite(tailor, fresh_redis, config, progress=lambda line: None)
        assert tailor.stop() == 0  # the graceful shutdown ended cleanly
    finally:
        tailor.stop()

    load = results["load_4"]
    assert load["ok"] and load["load"]["requests"] > 0, load
    assert load["memory_start_mib"] and load["memory_end_mib"]
    assert {"tailor up (driver)", "tailor:Generator", "tailor:Ingress"} <= set(
        load["memory_end_mib"]), load["memory_end_mib"]

    crash = results["redis_killed"]
    assert crash["acknowledged"] > 0
    assert crash["lost"] == 0 and crash["acknowledged_and_stored"] == crash["acknowledged"], crash
    failures = crash["load"]["failures"]
    assert set(failures) == {"503 store_unavailable"}, failures  # Redis was down: said so
    assert crash["ok"], crash
