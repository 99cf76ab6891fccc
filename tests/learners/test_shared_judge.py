"""The shared heads in every user's reward: a fixed penalty no user's votes outweigh,
the costs the gate checks, and what the learners write for the API and /metrics."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load as load_tensors

from contracts.gold_checks import GoldAnswer
from contracts.keys import SHARED_HEADS_KEY, SHARED_HEADS_WEIGHTS_KEY, user_key
from contracts.principles_file import load_principles
from learners.guard import Guard
from learners.rater_reliability import CrowdConfig
from learners.shared_judge import SharedJudge
from learners.training_data import TrainingExample
from tests.learners.test_principles import SHIPPED, text_features

DIM = 32  # text_features' width: the principles' prior and the judged answers share it


def thumb(completion: str, features: np.ndarray, label: int, criterion: str) -> TrainingExample:
    return TrainingExample("1-0", "thumbs", completion, 0.0, [1], features[None], choice=0,
                           label=label, criterion=criterion)


def crowd(seed: int = 0, adversarial: int = 3) -> tuple[dict[str, list[TrainingExample]], torch.Tensor]:
    """Seven careful raters and ``adversarial`` ones who call every answer harmless,
    each judging 60 answers of their own; harmful answers lie along ``direction``."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIM).astype(np.float32)
    examples = {}
    for user in range(7 + adversarial):
        name = f"adversarial-{user}" if user >= 7 else f"careful-{user}"
        mine = []
        for k in range(60):
            features = rng.normal(size=DIM).astype(np.float32)
            harmful = float(features @ direction) > 1.0
            said = 1 if user >= 7 else int((not harmful) if rng.random() < 0.9 else harmful)
            mine.append(thumb(f"{name}-{k}", features, said, "harmless"))
        examples[name] = mine
    return examples, torch.from_numpy(direction)


def held_out(direction: torch.Tensor, count: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.randn(count, DIM, generator=torch.Generator().manual_seed(7))
    return features, features @ direction > 1.0


def judge(weight_raters: bool = True, strength: float = 8.0) -> SharedJudge:
    """Heads with no prior: the synthetic crowd's features are not text's."""
    return SharedJudge(None, text_features, strength, CrowdConfig(weight_raters=weight_raters))


def test_before_any_judgment_the_heads_are_the_principles_prior():
    shared = SharedJudge(SHIPPED, text_features, 8.0)
    assert set(shared.heads) == {"harmless", "honest"}
    assert all(head.fit is None and head.prior is not None for head in shared.heads.values())
    assert set(judge().costs(torch.randn(2, DIM))) == set()  # no prior, no judgment: no cost
    features = torch.randn(5, DIM)
    costs = shared.costs(features)
    assert all(bool(((c >= 0) & (c <= 1)).all()) for c in costs.values())
    assert torch.allclose(shared.penalty(features), 8.0 * (costs["harmless"] + costs["honest"]))


def test_below_the_threshold_an_answer_pays_nothing_and_a_sure_breach_pays_the_strength():
    shared = SharedJudge(SHIPPED, text_features, 8.0, threshold=0.2)
    features = torch.randn(64, DIM, generator=torch.Generator().manual_seed(3))
    costs = shared.costs(features)
    expected = sum(8.0 * ((c - 0.2).clamp(min=0) / 0.8) for c in costs.values())
    torch.testing.assert_close(shared.penalty(features), expected)
    everyday = (costs["harmless"] <= 0.2) & (costs["honest"] <= 0.2)
    assert bool(everyday.any()) and bool((shared.penalty(features)[everyday] == 0).all())
    # an answer the heads surely judge harmful and false pays the strength for each
    sure = SharedJudge(SHIPPED, text_features, 8.0, threshold=0.2)
    sure.costs = lambda rows: {c: torch.ones(len(rows)) for c in ("harmless", "honest")}
    torch.testing.assert_close(sure.penalty(features[:2]), torch.full((2,), 16.0))


def test_the_principles_prompts_are_the_red_team_prompts_every_users_ppo_sees():
    shared = SharedJudge(SHIPPED, text_features, 8.0)
    principles = load_principles(SHIPPED)
    written = [e.prompt for p in principles.principles for e in p.examples]
    assert shared.red_team_prompts == list(dict.fromkeys(written + principles.red_team))
    assert len(principles.red_team) >= 50  # the shipped list, beyond the examples' prompts
    assert any("wifi" in prompt for prompt in shared.red_team_prompts)
    assert SharedJudge(None, text_features, 8.0).red_team_prompts == []


def test_the_prompts_of_everyones_harmless_and_honest_judgments_join_the_red_team():
    features = np.ones((1, DIM), dtype=np.float32)

    def judged(event: str, at: float, prompt: list[int], criterion: str) -> TrainingExample:
        return TrainingExample(event, "thumbs", event, at, prompt, features, choice=0, label=0,
                               criterion=criterion)

    shared = judge()
    shared.refit({
        "ann": [judged("a1", 1.0, [5, 6], "harmless"), judged("a2", 4.0, [9], "helpful")],
        "ben": [judged("b1", 2.0, [7], "honest"), judged("b2", 3.0, [5, 6], "harmless")],
    })
    # distinct, oldest first; a taste judgment's prompt is no report
    assert shared.reported_prompts == [[7], [5, 6]]


def test_the_penalty_outweighs_any_taste_for_harm():
    """An adversarial user's reward (clipped to ±3) prefers harmful answers; minus the
    shared penalty, every user's PPO reward prefers the harmless ones."""
    examples, direction = crowd()
    shared = judge()
    shared.refit(examples)
    features, harmful = held_out(direction)
    taste = torch.where(harmful, 3.0, -3.0)  # loves harm, as much as the clip allows
    total = taste - shared.penalty(features)
    clear = (features @ direction - 1.0).abs() > 1.0  # away from the boundary
    # the taste says +6 for harm, the most it can say; minus the penalty, harm still loses
    assert float(total[harmful & clear].mean()) < float(total[~harmful & clear].mean()) - 0.5


def test_reliability_weighting_keeps_adversarial_raters_from_moving_the_head():
    examples, direction = crowd()
    features, harmful = held_out(direction)

    def accuracy(weight_raters: bool) -> float:
        shared = judge(weight_raters)
        shared.refit(examples)
        said_harmful = shared.costs(features)["harmless"] > 0.5
        return float((said_harmful == harmful).float().mean())

    weighted, at_their_word = accuracy(True), accuracy(False)
    assert weighted >= 0.9, weighted
    assert weighted - at_their_word >= 0.03, (weighted, at_their_word)


def test_the_judge_records_each_raters_reliability_and_the_heads_numbers(redis_client):
    examples, _ = crowd()
    shared = judge()
    shared.refit(examples)
    shared.record(redis_client)
    reliability = {name: float(redis_client.hget(user_key(name), "learner_reliability_harmless"))
                   for name in examples}
    careful = [r for name, r in reliability.items() if name.startswith("careful")]
    adversarial = [r for name, r in reliability.items() if name.startswith("adversarial")]
    assert max(adversarial) < 0.6 < min(careful), reliability
    assert redis_client.hget(user_key("careful-0"), "learner_shared_judgments_harmless") == b"60"
    stats = {k.decode(): v.decode() for k, v in redis_client.hgetall(SHARED_HEADS_KEY).items()}
    assert stats["harmless_judgments"] == "600" and stats["harmless_raters"] == "10"
    assert 0.8 <= float(stats["harmless_agreement"]) <= 1.0
    assert sorted(json.loads(stats["harmless_reliability"])) == sorted(reliability.values())
    assert "honest_judgments" in stats and stats["honest_judgments"] == "0"


def test_each_head_folds_into_one_logistic_layer_that_others_can_load(redis_client):
    examples, _ = crowd()
    shared = SharedJudge(SHIPPED, text_features, 8.0)  # a prior and judgments: both folded
    shared.refit(examples)
    shared.record(redis_client)
    stored = load_tensors(redis_client.get(SHARED_HEADS_WEIGHTS_KEY))
    features = torch.randn(100, DIM, generator=torch.Generator().manual_seed(5))
    for criterion, head in shared.heads.items():
        logits = features @ stored[f"{criterion}.weight"] + stored[f"{criterion}.bias"]
        assert torch.allclose(logits, head.fine_logits(features), atol=1e-4), criterion


def test_a_models_built_in_guard_is_the_harmlessness_prior(tmp_path):
    weight, bias = torch.randn(DIM), torch.tensor(0.3)
    guard = Guard(weight, bias)
    shared = SharedJudge(SHIPPED, text_features, 8.0, guards={"harmless": guard})
    features = torch.randn(20, DIM, generator=torch.Generator().manual_seed(9))
    # P(not harmless) is the guard's P(dismissive); honesty keeps the principles' prior
    assert torch.allclose(shared.costs(features)["harmless"], guard.probability(features),
                          atol=1e-6)
    principles_only = SharedJudge(SHIPPED, text_features, 8.0)
    assert torch.allclose(shared.priors["honest"].weight, principles_only.priors["honest"].weight)
    assert not torch.allclose(shared.costs(features)["harmless"],
                              principles_only.costs(features)["harmless"])


def test_without_principles_the_guard_is_still_the_harmlessness_prior():
    guard = Guard(torch.randn(DIM), torch.tensor(-0.2))
    shared = SharedJudge(None, text_features, 2.0, guards={"harmless": guard})
    features = torch.randn(10, DIM)
    assert set(shared.costs(features)) == {"harmless"}
    assert torch.allclose(shared.penalty(features), 2.0 * guard.probability(features), atol=1e-6)


def test_an_honesty_guard_is_the_honesty_prior_beside_the_harmlessness_one():
    harmless, honest = (Guard(torch.randn(DIM, generator=torch.Generator().manual_seed(seed)),
                              torch.tensor(bias)) for seed, bias in ((1, -0.2), (2, 0.4)))
    shared = SharedJudge(SHIPPED, text_features, 8.0,
                         guards={"harmless": harmless, "honest": honest})
    features = torch.randn(20, DIM, generator=torch.Generator().manual_seed(3))
    costs = shared.costs(features)  # neither from the principles' written answers now
    assert torch.allclose(costs["harmless"], harmless.probability(features), atol=1e-6)
    assert torch.allclose(costs["honest"], honest.probability(features), atol=1e-6)
    # the principles still give the red-team prompts
    assert shared.red_team_prompts == SharedJudge(SHIPPED, text_features, 8.0).red_team_prompts


def test_a_rewritten_principles_file_refits_the_prior(tmp_path):
    path = tmp_path / "principles.yaml"
    path.write_text(SHIPPED.read_text())
    shared = SharedJudge(path, text_features, 8.0)
    features = torch.randn(50, DIM, generator=torch.Generator().manual_seed(3))
    before = shared.costs(features)["honest"]
    path.write_text(SHIPPED.read_text().replace("criterion: honest", "criterion: harmless"))
    shared.refit({})
    assert "honest" not in shared.priors  # every principle is about harm now
    assert before.shape == (50,) and "honest" not in shared.costs(features)


def test_the_heads_are_refitted_only_when_a_judgment_a_check_or_the_principles_changed(
    tmp_path,
):
    path = tmp_path / "principles.yaml"
    path.write_text(SHIPPED.read_text())
    shared = SharedJudge(path, text_features, 8.0)
    examples, _ = crowd(adversarial=1)
    assert shared.refit(examples)
    heads = shared.heads
    assert not shared.refit(examples) and shared.heads is heads  # a refine: nothing new
    taste = thumb("t", np.ones(DIM, dtype=np.float32), 1, "helpful")
    assert not shared.refit({**examples, "newcomer": [taste]})  # no judgment of harm or truth
    one_more = thumb("h", np.ones(DIM, dtype=np.float32), 0, "harmless")
    examples["careful-0"] = [*examples["careful-0"], one_more]
    assert shared.refit(examples) and shared.heads is not heads

    checked = {"careful-1": [GoldAnswer("check-1", "harmless", True, False, 1.0)]}
    assert shared.refit(examples, checked) and not shared.refit(examples, checked)
    again = {"careful-1": [GoldAnswer("check-1", "harmless", True, True, 2.0)]}
    assert shared.refit(examples, again)  # the same check answered again
    del examples["adversarial-7"]  # forgotten
    assert shared.refit(examples, again)
    path.write_text(SHIPPED.read_text().replace("criterion: honest", "criterion: harmless"))
    assert shared.refit(examples, again) and "honest" not in shared.priors

def test_the_gates_rate_counts_answers_judged_breaking_not_their_style_leanings():
    shared = SharedJudge(SHIPPED, text_features, 8.0)
    features = torch.randn(64, DIM, generator=torch.Generator().manual_seed(5))
    costs, breaches = shared.costs(features), shared.breaches(features)
    for criterion, cost in costs.items():
        below = cost <= 0.5
        assert bool((breaches[criterion][below] == 0).all())  # leanings below even odds: 0
        torch.testing.assert_close(breaches[criterion][~below], (cost[~below] - 0.5) / 0.5)
    sure = SharedJudge(SHIPPED, text_features, 8.0)
    sure.costs = lambda rows: {"harmless": torch.tensor([0.04, 0.3, 1.0])}
    torch.testing.assert_close(sure.breaches(features[:3])["harmless"],
                               torch.tensor([0.0, 0.0, 1.0]))


def test_answers_to_red_team_prompts_pay_from_their_own_threshold():
    shared = SharedJudge(SHIPPED, text_features, 8.0, threshold=0.5, red_team_threshold=0.0)
    features = torch.randn(6, DIM, generator=torch.Generator().manual_seed(4))
    costs = sum(shared.costs(features).values())
    asked = torch.tensor([True, False, True, False, True, False])
    expected = torch.where(asked, 8.0 * costs, shared.penalty(features))
    torch.testing.assert_close(shared.penalty(features, red_team=asked), expected)
    torch.testing.assert_close(shared.penalty(features, red_team=True), 8.0 * costs)
    assert not torch.allclose(shared.penalty(features, red_team=True), shared.penalty(features))
