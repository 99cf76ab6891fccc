"""`tailor demo`'s report, without running the demo: the before/after numbers per user and
the share of the possible gain in the user's own hidden score."""

from __future__ import annotations

import pytest
from rich.console import Console

from simulation.demo import DemoConfig, demo_table, gain_share, report
from simulation.harness import RoundRecord, UserRun
from simulation.users import make_users


def test_gain_share_is_the_part_of_the_room_to_the_best_score_taken() -> None:
    assert gain_share(before=0.0, after=0.5, best=1.0) == pytest.approx(0.5)
    assert gain_share(before=-0.14, after=0.38, best=1.0) == pytest.approx(0.52 / 1.14)
    assert gain_share(before=0.2, after=1.0, best=1.0) == pytest.approx(1.0)
    assert gain_share(before=0.2, after=-0.2, best=0.6) == pytest.approx(-1.0)  # worse: < 0
    assert gain_share(before=1.0, after=0.9, best=1.0) is None  # no room: nothing to share


def _run(user, styles: list[str], scores: list[float],
         behaviours: dict[str, list[str]] | None = None,
         behaviour_styles: dict[str, list[str | None]] | None = None) -> UserRun:
    behaviours = behaviours or {}
    run = UserRun(user)
    run.records = [RoundRecord(0, styles, scores, [], len(styles), "tailor-base",
                               eval_behaviours=behaviours,
                               eval_behaviour_styles=behaviour_styles or {
                                   category: ["concise"] * len(seen)
                                   for category, seen in behaviours.items()})]
    return run


def test_the_report_and_its_table_give_before_after_and_the_gain_share_per_user() -> None:
    emoji, adversarial = make_users("emoji_fan,adversarial", prefix="demo")
    # emoji_fan: casual 1.0, concise 0.4, formal -0.8; adversarial: dismissive 1.0
    phase_runs = {
        "before": [_run(emoji, ["casual", "concise", "formal", "formal"], [1.0, 0.4, -0.8, -0.8],
                        {"harm_request": ["harmful_compliance", "refusal", "refusal", "refusal"],
                         "myth": ["falsehood", "refutation"]}),
                   _run(adversarial, ["dismissive", "concise"], [1.0, -0.5])],
        "feedback": [_run(emoji, ["casual"] * 4, [1.0] * 4),
                     _run(adversarial, ["concise"] * 4, [-0.5] * 4)],
        "after": [_run(emoji, ["casual", "casual", "concise", "formal"], [1.0, 1.0, 0.4, -0.8],
                       {"harm_request": ["refusal"] * 4, "myth": ["falsehood", "falsehood"]},
                       {"harm_request": ["bullets"] * 4, "myth": ["formal", None]}),
                  _run(adversarial, ["concise", "concise"], [-0.5, -0.5])],
    }
    view = {"kl": 3.5, "ppo_seconds": 4.0, "adapter_version": "v3.abc", "reward_accuracy": 0.8,
            "last_decision": "published", "updates": {"published": 3},
            "reliability": {"harmless": 0.91, "honest": None}, "population_weight": 0.4,
            "shared_judgments_used": {"harmless": 12, "honest": 0},
            "gold_checks_used": {"harmless": 2, "honest": 3}}
    views = {emoji.user_id: view, adversarial.user_id: view}
    result = report(DemoConfig(users="emoji_fan,adversarial"), [emoji, adversarial], phase_runs,
                    views, lags=[1.0, 2.0], timings={"total": 1.0}, caught_up=True)
    fan = result["users"][emoji.user_id]
    assert (fan["habit"], fan["scores"]) == ("thumbs", True)
    assert (fan["preferred_rate_before"], fan["preferred_rate_after"]) == (0.25, 0.5)
    assert fan["mean_score_before"] == pytest.approx(-0.05)
    assert fan["mean_score_after"] == pytest.approx(0.4)
    assert fan["max_mean_score"] == 1.0
    assert fan["score_gain_share"] == pytest.approx(0.45 / 1.05)
    # the misbehaviour rates: answers to requests for harm / myths that gave in
    assert (fan["harmful_rate_before"], fan["harmful_rate_after"]) == (0.25, 0.0)
    assert (fan["false_rate_before"], fan["false_rate_after"]) == (0.5, 1.0)
    assert fan["toxic_rate_before"] is None  # no provocation was asked: not measured
    # the styles the misbehaviours after came in (refusals are not counted)
    assert fan["misbehaviour_styles_after"] == {
        "false_rate": {"formal": 1, "none": 1}, "harmful_rate": {}, "toxic_rate": {}}
    assert fan["reliability"] == {"harmless": 0.91, "honest": None}
    assert fan["population_weight"] == 0.4
    assert fan["gold_checks_used"] == {"harmless": 2, "honest": 3}
    rival = result["users"][adversarial.user_id]
    assert rival["score_gain_share"] == pytest.approx((-0.5 - 0.25) / (1.0 - 0.25))

    console = Console(width=240, record=True)  # as print_summary prints it
    console.print(demo_table(result))
    text = console.export_text()
    assert "gain share" in text and "thumbs+score" in text
    assert "-0.05 -> +0.40" in text and "43%" in text and "-100%" in text
    assert "25% -> 0%" in text and "50% -> 100%" in text and "0.91/-" in text
