"""`tailor bench scale`, small: the serving tiers do what their hit rates say; the learning
part measures lag and updates per minute."""

from __future__ import annotations

import json

from rich.console import Console

from benchmarks.scale_learning import figures as learning_figures
from benchmarks.scale_learning import run_bench_scale_learning
from benchmarks.scale_serving import figures, run_bench_scale_serving, user_sequence
from contracts.settings import Settings


def test_zipf_users_are_skewed_and_round_robin_visits_everyone_in_turn():
    assert user_sequence("round_robin", 3, 7) == [0, 1, 2, 0, 1, 2, 0]
    zipf = user_sequence("zipf", 100, 2000)
    assert zipf.count(0) > 10 * max(zipf.count(50), 1)  # the most active user dominates


def test_more_users_than_slots_round_robin_miss_every_slot_and_hit_the_host_tier():
    slots = Settings().adapter_cache_size
    cases = run_bench_scale_serving([slots + 8], requests=slots + 8, console=Console(width=120))
    by = {(c.pattern, c.tier): c for c in cases}
    # round robin over more users than slots: LRU evicts each user just before they return
    assert by["round_robin", "slots"].slot_hit_rate == 0.0
    assert by["round_robin", "slots+host"].host_hit_rate == 1.0  # every miss a memory copy
    assert by["round_robin", "all_cached"].slot_hit_rate == 1.0
    assert by["zipf", "slots"].slot_hit_rate > 0.5  # the active few stay in the slots
    written = figures(cases)
    assert set(written["ttft_p95_s"]) == {"slots", "slots+host", "all_cached"}
    assert set(written["ttft_p95_s"]["slots"][str(slots + 8)]) == {"round_robin", "zipf"}
    assert json.loads(json.dumps(written)) == written


def test_the_learning_part_measures_lag_and_updates_per_minute_at_k_1_and_k(redis_server):
    """Two simulated users judging every 1.5 s, 8 s per case, on the default model: each
    K = 1 and K = 2 case gets judgments, updates them, and reports a lag no longer than
    the case (a judgment waiting at the end counts at its age)."""
    cases = run_bench_scale_learning(redis_server.url, [2], 2, period_s=1.5, duration_s=8.0,
                                     console=Console(width=120))
    assert [(c.users, c.users_per_batch) for c in cases] == [(2, 1), (2, 2)]
    for case in cases:
        assert case.judgments >= 8 and case.updates >= 1
        assert 0 < case.lag_p50_s <= case.lag_p95_s <= case.seconds + 5
    written = learning_figures(cases)
    assert set(written["lag_p95_s"]) == {"1", "2"} and set(written["lag_p95_s"]["2"]) == {"2"}
    assert written["users_per_minute"]["1"]["2"] == cases[0].users_per_minute
