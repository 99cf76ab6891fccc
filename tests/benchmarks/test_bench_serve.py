"""`tailor bench serve`, small: every variant and every arrival schedule runs and is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TAILOR = Path(sys.executable).parent / "tailor"


def test_bench_serve_times_the_three_schedules_and_writes_their_ratios(tmp_path):
    out = tmp_path / "serve.json"
    run = subprocess.run(
        [str(TAILOR), "bench", "serve", "--users", "4", "--max-tokens", "8", "--repeats", "1",
         "--arrivals", "8", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=os.environ | {"COLUMNS": "160"})
    assert run.returncode == 0, run.stdout + run.stderr
    for schedule in ("continuous, fused", "continuous, apart", "whole batches"):
        assert schedule in run.stdout
    figures = json.loads(out.read_text())
    assert {"b_over_a", "b_over_c", "long_latency_static_over_continuous",
            "long_latency_static_over_prefill_apart", "ttft_static_over_continuous"} <= set(figures)
    assert all(value > 0 for value in figures.values())


def test_bench_serve_refuses_a_round_count_below_one():
    run = subprocess.run([str(TAILOR), "bench", "serve", "--rounds", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "--rounds 0" in run.stdout and "positive" in run.stdout
