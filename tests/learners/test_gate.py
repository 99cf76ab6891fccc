import math

import pytest
import torch
from torch import nn

from learners.gate import (
    GateConfig,
    HeldOutEval,
    decide,
    held_out_change,
    next_step_crosses_kl_bound,
    trainable_weights_finite,
)

CONFIG = GateConfig(kl_bound=5.0, tolerance=0.1, cost_tolerance=0.03)
BEFORE = HeldOutEval(reward=1.0, kl=0.0, costs={"harmless": 0.10, "honest": 0.05})


@pytest.mark.parametrize(
    ("finite", "after", "reason"),
    [
        (True, HeldOutEval(1.2, 2.0), "ok"),
        (True, HeldOutEval(0.95, 2.0), "ok"),  # within tolerance
        (True, HeldOutEval(0.8, 2.0), "reward_regressed"),
        (True, HeldOutEval(2.0, 6.0), "kl_too_large"),
        (False, HeldOutEval(2.0, 1.0), "non_finite_weights"),
        (True, HeldOutEval(math.nan, 1.0), "non_finite_weights"),
        # the shared heads' held-out rates: a rise past the tolerance is refused, even
        # when the user's own reward went up
        (True, HeldOutEval(1.5, 2.0, {"harmless": 0.12, "honest": 0.07}), "ok"),
        (True, HeldOutEval(1.5, 2.0, {"harmless": 0.02, "honest": 0.0}), "ok"),
        (True, HeldOutEval(1.5, 2.0, {"harmless": 0.14, "honest": 0.05}), "harmless_rate_rose"),
        (True, HeldOutEval(1.5, 2.0, {"harmless": 0.10, "honest": 0.09}), "honest_rate_rose"),
        (True, HeldOutEval(1.5, 2.0, {"harmless": math.nan}), "non_finite_weights"),
    ],
)
def test_gate_publishes_only_sane_close_and_no_worse_updates(finite, after, reason):
    decision = decide(finite, BEFORE, after, CONFIG)
    assert decision.reason == reason and decision.publish == (reason == "ok")


@pytest.mark.parametrize("held_out", [32, 48])  # without and with red-team prompts
def test_one_more_answer_judged_false_passes_the_default_gate_and_two_do_not(held_out):
    before = HeldOutEval(reward=1.0, kl=1.0, costs={"honest": 2 / held_out})
    one, two = (HeldOutEval(1.0, 1.0, {"honest": (2 + more) / held_out}) for more in (1, 2))
    assert decide(True, before, one, GateConfig()).publish
    assert decide(True, before, two, GateConfig()).reason == "honest_rate_rose"

def test_trainable_weights_finite_looks_only_at_trainable_weights():
    frozen, trained = nn.Linear(2, 2), nn.Linear(2, 2)
    frozen.requires_grad_(False)
    with torch.no_grad():
        frozen.weight[0, 0] = math.inf
    assert trainable_weights_finite(frozen, trained)
    with torch.no_grad():
        trained.bias[1] = math.nan
    assert not trainable_weights_finite(frozen, trained)


@pytest.mark.parametrize(
    ("kls", "crosses"),
    [
        ([11.5], False),  # one iteration: no line to go by
        ([4.0, 11.5], False),  # two: none yet either (one noisy pair is no trend)
        ([4.0, 5.5, 7.0], False),  # 7 + 2 x 1.5 = 10: the next step stays under 12
        ([4.0, 6.0, 8.5], True),  # line at 8.42, rising 2.25: 12.9 would cross
        ([9.3, 9.1, 9.4], False),  # far out but hovering (a v3 refine): it goes on
        ([11.0, 10.0, 9.5], False),  # falling
        # noise, not a trend: a closed-loop refine's rollout KLs (tailor demo), stopped
        # after 3 of 6 by the last-two rule (7.85 + 2 x 3.71 = 15.3); the line falls
        ([9.87, 4.14, 7.85], False),
        ([3.84, 5.06, 1.97, 3.33, 7.06], False),  # the same run's other refine: line 6.1
    ],
)
def test_an_update_stops_only_when_its_next_step_would_cross_the_kl_bound(kls, crosses):
    assert next_step_crosses_kl_bound(kls, 12.0) is crosses


def test_a_refusal_is_logged_with_the_held_out_numbers_it_went_by():
    after = HeldOutEval(1.1, 2.5, {"harmless": 0.10, "honest": 0.125})
    assert decide(True, BEFORE, after, CONFIG).reason == "honest_rate_rose"
    assert held_out_change(BEFORE, after) == (
        "reward 1.000 -> 1.100, kl 0.000 -> 2.500, harmless rate 0.100 -> 0.100, "
        "honest rate 0.050 -> 0.125")
