"""Rater reliability for taste: each user's weight in the population reward, on synthetic
voters whose behaviour is known (`learners.taste_reliability`)."""

from __future__ import annotations

import torch

from learners.reward_config import RewardConfig
from learners.reward_data import FeedbackBuilder, FeedbackSet
from learners.reward_model import RewardModel
from learners.taste_reliability import taste_weights

DIM = 8
CONFIG = RewardConfig(rank=2, population_weight_decay=1e-3, steps=150, seed=0)


def voters(ordinary: int, random: int, contrary: int, seed: int = 0, texts: int = 200,
           votes: int = 60, noise: float = 0.1,
           ) -> tuple[FeedbackSet, torch.Tensor, torch.Tensor, list[str]]:
    """Thumbs on shared texts: ordinary voters like what the crowd likes (``noise`` of their
    votes flipped), random ones flip coins, contrary ones vote against the crowd. Returns the
    data, the texts' features, each text's consensus (1: liked) and each user's kind."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(texts, DIM, generator=generator)
    liked = (features @ torch.randn(DIM, generator=generator) > 0).float()
    kinds = ["ordinary"] * ordinary + ["random"] * random + ["contrary"] * contrary
    builder = FeedbackBuilder(DIM)
    for index, kind in enumerate(kinds):
        for text in torch.randperm(texts, generator=generator)[:votes].tolist():
            coin = float(torch.rand((), generator=generator))
            if kind == "random":
                label = float(coin < 0.5)
            else:
                label = float(liked[text]) if coin >= noise else 1 - float(liked[text])
                label = 1 - label if kind == "contrary" else label
            builder.add_thumb(f"{kind}-{index}", features[text], label)
    return builder.build(), features, liked, kinds


def test_voters_at_chance_or_against_the_crowd_lose_their_weight():
    # 120 votes each: J of a coin from 60 votes has a standard deviation of ~0.13, a
    # weight of 0 to 0.8 (four seeds); from 120, 0 to 0.56
    data, _, _, kinds = voters(ordinary=10, random=3, contrary=2, votes=120)
    weights = dict(zip(data.user_ids, taste_weights(data).tolist(), strict=True))
    by_kind = {kind: [w for user, w in weights.items() if user.startswith(kind)]
               for kind in set(kinds)}
    assert min(by_kind["ordinary"]) == 1.0, by_kind  # agree with the crowd: full weight
    random = by_kind["random"]
    assert sum(random) / len(random) < 0.3 and max(random) < 0.6, by_kind  # a coin: little
    assert max(by_kind["contrary"]) == 0.0, by_kind  # against the crowd: ignored, not inverted


def test_rankings_only_users_keep_full_weight_and_off_means_equal_weights():
    data, _, _, _ = voters(ordinary=6, random=2, contrary=0)
    builder = FeedbackBuilder(DIM)
    texts = torch.randn(3, DIM, generator=torch.Generator().manual_seed(1))
    builder.add_ranking("ranker", "p1", texts)
    ranker = builder.build()
    both = FeedbackSet(
        torch.cat([data.features, ranker.features]), data.user_ids + ["ranker"],
        data.thumb_user, data.thumb_item, data.thumb_label,
        torch.full_like(ranker.pair_user, len(data.user_ids)),
        ranker.pair_better + len(data.features), ranker.pair_worse + len(data.features),
        ranker.pair_weight)
    weights = taste_weights(both)
    assert weights[-1] == 1.0
    assert (weights[:-1] < 1).any()
    assert torch.equal(taste_weights(both, enabled=False),
                       torch.ones(len(both.user_ids)))


def test_weighted_population_follows_the_crowd_when_contrary_voters_outnumber_it():
    # 5 ordinary voters against 4 contrary ones who vote more: taken at their word, the
    # population reward barely separates what the crowd likes
    data, texts, liked, _ = voters(ordinary=5, random=0, contrary=4, votes=120)
    agreement = {}
    for name, weights in (("equal", None), ("weighted", taste_weights(data))):
        model = RewardModel.fit(data, CONFIG, weights)
        predicted = (model.population_score(texts) > 0).float()
        agreement[name] = float((predicted == liked).float().mean())
    assert agreement["weighted"] > 0.9, agreement
    assert agreement["weighted"] > agreement["equal"] + 0.05, agreement
