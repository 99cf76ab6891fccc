"""Per-user reward models: pairs, labels, losses, the head solver, fitting, cold start,
accuracy of each event before training on it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from learners.reward_config import RewardConfig
from learners.reward_data import (
    FeedbackBuilder,
    FeedbackSet,
    RankingEvent,
    ThumbEvent,
    ranking_pairs,
    thumb_label,
)
from learners.reward_heads import HeadDesign, solve_user_heads
from learners.reward_losses import pair_loss, thumb_loss
from learners.reward_model import RewardModel

DIM = 16
# Small and quick, as the learners use it; fixed seeds everywhere.
CONFIG = RewardConfig(rank=2, steps=150, seed=0)
MLP_CONFIG = RewardConfig(rank=2, population_hidden=32, user_hidden=32, steps=50, seed=0)


def taste(user: int, features: torch.Tensor) -> torch.Tensor:
    """True preference of synthetic user ``user``: everyone likes dimension 1, and the
    even users like dimension 0 while the odd users dislike it, twice as strongly."""
    sign = 1.0 if user % 2 == 0 else -1.0
    return features[:, 1] + 2.0 * sign * features[:, 0]


def synthetic_thumbs(num_users: int, per_user: int, seed: int
                     ) -> tuple[FeedbackBuilder, list[ThumbEvent]]:
    generator = torch.Generator().manual_seed(seed)
    builder = FeedbackBuilder(DIM)
    events = []
    for user in range(num_users):
        features = torch.randn(per_user, DIM, generator=generator)
        labels = (taste(user, features) > 0).long()
        for row, label in zip(features, labels):
            event = ThumbEvent(f"u{user}", row, int(label))
            builder.add(event)
            events.append(event)
    return builder, events


def accuracy_on_new_texts(model: RewardModel, users: range, personal: bool) -> float:
    generator = torch.Generator().manual_seed(99)
    correct = total = 0
    for user in users:
        features = torch.randn(200, DIM, generator=generator)
        if personal:
            scores = model.score(f"u{user}", features)
        else:
            scores = model.population_score(features)
        correct += int(((scores > 0) == (taste(user, features) > 0)).sum())
        total += 200
    return correct / total


# ------------------------------------------------------------------ pairs, labels, losses


def test_ranking_pairs_are_all_k_choose_2_best_first() -> None:
    assert ranking_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert len(ranking_pairs(5)) == 10
    assert ranking_pairs(1) == []


def test_builder_turns_a_ranking_into_pairs_weighted_per_prompt() -> None:
    builder = FeedbackBuilder(2)
    choices = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    builder.add(RankingEvent("alice", "prompt-1", choices))
    builder.add(RankingEvent("alice", "prompt-2", choices[:2]))
    builder.add(ThumbEvent("bob", torch.tensor([1.0, 1.0]), True))
    data = builder.build()
    assert data.user_ids == ["alice", "bob"]
    # a prompt weighs one judgment
    assert data.pair_weight.tolist() == pytest.approx([1 / 6] * 6 + [1.0])
    better = data.features[data.pair_better][:, 0]
    worse = data.features[data.pair_worse][:, 0]
    assert bool((better > worse).all())  # best-first order kept in every pair
    assert data.thumb_label.tolist() == [1.0] and data.thumb_user.tolist() == [1]


def test_thumb_labels_are_up_down_or_a_grade_and_anything_else_is_refused() -> None:
    assert [thumb_label(v) for v in (1, True, 0, False)] == [1.0, 1.0, 0.0, 0.0]
    assert thumb_label(0.25) == 0.25  # a graded label (a score without a thumb)
    with pytest.raises(ValueError, match=r"label=-1 is not in \[0, 1\]"):
        thumb_label(-1)


def test_losses_match_hand_computed_values() -> None:
    scores, labels = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    expected = math.log(2) + math.log(1 + math.exp(2.0))
    assert thumb_loss(scores, labels).item() == pytest.approx(expected, rel=1e-6)
    better, worse = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    expected_pairs = 0.5 * math.log(1 + math.exp(-1.0)) + 2.0 * math.log(2)
    pairs = pair_loss(better, worse, torch.tensor([0.5, 2.0])).item()
    assert pairs == pytest.approx(expected_pairs, rel=1e-6)


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match=r"RewardConfig.user_l2=-1"):
        RewardConfig(user_l2=-1)
    builder = FeedbackBuilder(4)
    with pytest.raises(ValueError, match="feature_dim=4"):
        builder.add_thumb("u", torch.zeros(5), 1)


# ------------------------------------------------------------------ learning


def test_per_user_model_beats_the_population_on_users_whose_tastes_differ() -> None:
    torch.manual_seed(0)
    builder, _ = synthetic_thumbs(num_users=20, per_user=40, seed=0)
    model = RewardModel.fit(builder.build(), CONFIG)
    population = accuracy_on_new_texts(model, range(20), personal=False)
    per_user = accuracy_on_new_texts(model, range(20), personal=True)
    # The population can only learn the shared half of the taste (~60-70%).
    assert population < 0.75
    assert per_user >= population + 0.15, (population, per_user)


def test_unknown_user_and_user_with_no_votes_get_the_population_reward() -> None:
    builder, _ = synthetic_thumbs(num_users=6, per_user=30, seed=1)
    model = RewardModel.fit(builder.build(), CONFIG)
    features = torch.randn(10, DIM)
    assert torch.equal(model.score("stranger", features), model.population_score(features))
    model.fit_user("newcomer", FeedbackBuilder(DIM).build())
    assert torch.allclose(model.score("newcomer", features), model.population_score(features))


def test_fit_user_learns_a_newcomers_taste_in_well_under_a_second() -> None:
    builder, _ = synthetic_thumbs(num_users=20, per_user=40, seed=2)
    model = RewardModel.fit(builder.build(), CONFIG)
    own, _ = synthetic_thumbs(num_users=2, per_user=300, seed=3)  # u1: an odd-taste user
    data = own.build()
    keep = data.thumb_user == 1
    newcomer = FeedbackSet.from_thumbs(data.features, ["u1"], data.thumb_user[keep] * 0,
                                       data.thumb_item[keep], data.thumb_label[keep])
    # CPU time, not wall time: the machine is shared, and what is promised is the work.
    started = time.process_time()
    model.fit_user("u1-new", newcomer)
    elapsed = time.process_time() - started
    features = torch.randn(400, DIM, generator=torch.Generator().manual_seed(5))
    truth = taste(1, features) > 0
    personal = ((model.score("u1-new", features) > 0) == truth).float().mean().item()
    population = ((model.population_score(features) > 0) == truth).float().mean().item()
    assert elapsed < 0.5, elapsed
    assert personal >= population + 0.15, (population, personal)


def test_rankings_alone_teach_a_users_order() -> None:
    generator = torch.Generator().manual_seed(4)
    builder = FeedbackBuilder(DIM)
    for user in range(8):
        for prompt in range(25):
            choices = torch.randn(4, DIM, generator=generator)
            order = torch.argsort(taste(user, choices), descending=True)
            builder.add(RankingEvent(f"u{user}", f"p{prompt}", choices[order]))
    model = RewardModel.fit(builder.build(), CONFIG)
    test = torch.randn(4, DIM, generator=generator)
    right = 0.0
    for user in range(8):
        for _ in range(20):
            choices = torch.randn(4, DIM, generator=generator)
            order = torch.argsort(taste(user, choices), descending=True)
            right += model.event_accuracy(RankingEvent(f"u{user}", "held-out", choices[order]))
    assert right / 160 >= 0.8
    assert model.score("u0", test).shape == (4,)


def test_event_accuracy_of_a_thumb_is_whether_the_reward_sign_matches_the_label() -> None:
    builder, events = synthetic_thumbs(num_users=10, per_user=40, seed=6)
    model = RewardModel.fit(builder.build(), CONFIG)
    generator = torch.Generator().manual_seed(7)
    accuracies = []
    for user in (0, 1):
        for row in torch.randn(50, DIM, generator=generator):
            label = int(taste(user, row[None])[0] > 0)
            event = ThumbEvent(f"u{user}", row, label)
            expected = float((model.score(f"u{user}", row[None])[0] > 0) == (label == 1))
            accuracy = model.event_accuracy(event)
            assert accuracy == expected
            accuracies.append(accuracy)
    # The learner's online accuracy is this mean over events it has not trained on yet.
    assert 0.75 <= sum(accuracies) / len(accuracies) <= 1.0
    wrong = ThumbEvent("u0", events[0].features, 1 - events[0].label)
    assert model.event_accuracy(wrong) == 1.0 - model.event_accuracy(events[0])


def test_a_ranking_of_fewer_than_two_texts_is_refused_with_its_shape() -> None:
    one_text = RankingEvent("alice", "p1", torch.zeros(1, DIM))
    with pytest.raises(ValueError, match=r"shape \(1, 16\): need \(K ≥ 2, D\)"):
        FeedbackBuilder(DIM).add(one_text)
    builder, _ = synthetic_thumbs(num_users=2, per_user=20, seed=12)
    model = RewardModel.fit(builder.build(), CONFIG)
    with pytest.raises(ValueError, match=r"shape \(1, 16\): need \(K ≥ 2, D\)"):
        model.event_accuracy(one_text)


def test_fitting_leaves_the_callers_random_state_alone() -> None:
    builder, _ = synthetic_thumbs(num_users=4, per_user=20, seed=10)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    RewardModel.fit(builder.build(), CONFIG)
    assert torch.equal(torch.rand(3), expected)


def test_score_votes_matches_score_for_known_and_unknown_users() -> None:
    builder, _ = synthetic_thumbs(num_users=4, per_user=20, seed=11)
    model = RewardModel.fit(builder.build(), CONFIG)
    features = torch.randn(5, DIM)
    user_ids = ["u1", "stranger", "u3"]
    user = torch.tensor([0, 0, 1, 2, 2])
    item = torch.tensor([0, 1, 2, 3, 4])
    batched = model.score_votes(user_ids, features, user, item)
    one_by_one = torch.stack([model.score(user_ids[u], features[i][None])[0]
                              for u, i in zip(user, item)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_refit_heads_with_an_overriding_shrinkage_moves_users_toward_the_population() -> None:
    """`reward_eval` chooses the shrinkage this way: towers frozen, heads re-solved."""
    builder, _ = synthetic_thumbs(num_users=6, per_user=40, seed=13)
    data = builder.build()
    model = RewardModel.fit(data, CONFIG)
    features = torch.randn(50, DIM, generator=torch.Generator().manual_seed(14))
    population = model.population_score(features)
    personal_gap = (model.score("u1", features) - population).abs().mean().item()
    model.refit_heads(data, user_l2=1e6, bias_l2=1e6)
    shrunk_gap = (model.score("u1", features) - population).abs().mean().item()
    assert personal_gap > 0.5, personal_gap  # u1's taste is far from the crowd's
    assert shrunk_gap < 0.01 * personal_gap, (personal_gap, shrunk_gap)


# ------------------------------------------------------------------ the head solver


def test_head_solver_matches_a_plain_minimisation_of_each_users_penalised_loss() -> None:
    """Batched Newton against L-BFGS on the summed objective (separable over users)."""
    generator = torch.Generator().manual_seed(15)
    num_users, num_factors, events = 3, 2, 60
    design = HeadDesign(
        user=torch.randint(num_users, (events,), generator=generator),
        offset=torch.randn(events, generator=generator),
        phi=torch.cat([torch.ones(events, 1),
                       torch.randn(events, num_factors, generator=generator)], dim=1),
        label=torch.randint(2, (events,), generator=generator).float(),
        weight=torch.rand(events, generator=generator) + 0.5,
    )
    bias_l2, user_l2 = 0.5, 2.0
    theta = solve_user_heads(design, num_users, num_factors, bias_l2, user_l2, steps=50)

    reference = torch.zeros(num_users, 1 + num_factors, dtype=torch.float64, requires_grad=True)
    penalty = torch.tensor([bias_l2] + [user_l2] * num_factors, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([reference], max_iter=200, tolerance_grad=1e-12,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        logits = design.offset.double() + (design.phi.double() * reference[design.user]).sum(-1)
        fit = thumb_loss(logits, design.label.double(), design.weight.double())
        loss = fit + 0.5 * (penalty * reference.pow(2)).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    assert torch.allclose(theta.double(), reference.detach(), atol=1e-4), (theta, reference)


def newcomer_data(events: int) -> FeedbackSet:
    own, _ = synthetic_thumbs(num_users=2, per_user=events, seed=3)  # u1: an odd-taste user
    data = own.build()
    keep = data.thumb_user == 1
    return FeedbackSet.from_thumbs(data.features, ["u1"], data.thumb_user[keep] * 0,
                                   data.thumb_item[keep], data.thumb_label[keep])


def test_a_users_sketch_scores_like_the_model_and_narrows_with_their_votes() -> None:
    """The sketch serving draws from (contracts.reward_sketch): at its mean it is the
    user's reward on raw features; its Laplace posterior shrinks as the user votes more."""
    builder, _ = synthetic_thumbs(num_users=20, per_user=40, seed=2)
    model = RewardModel.fit(builder.build(), CONFIG)
    features = torch.randn(50, DIM, generator=torch.Generator().manual_seed(5))
    spreads = []
    for events in (10, 300):
        data = newcomer_data(events)
        model.fit_user("u1-new", data)
        sketch = model.sketch("u1-new", data)
        at_mean = sketch.scores(features.numpy(), sketch.mean[None])[0]
        assert torch.allclose(torch.from_numpy(at_mean).float(), model.score("u1-new", features),
                              atol=1e-4)
        spreads.append(float(sketch.scores(
            features.numpy(), sketch.draw(np.random.default_rng(0), 500)).std(0).mean()))
    assert spreads[1] < 0.5 * spreads[0], spreads
    assert RewardModel.fit(builder.build(), MLP_CONFIG).sketch("u1-new", data) is None
