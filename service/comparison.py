"""Choosing the answers a user is asked to compare: double Thompson sampling.

A user's judgments teach their reward model only where they separate answers the
model is unsure about. Plain samples of a user's adapter rarely put the two styles
the model ranks first side by side (four samples over seven styles: about one
request in five), so a user who likes two styles almost equally can get the
second learned as the first (README, "Comparisons that teach"). As in Dwaracherla
et al., "Efficient Exploration for LLMs" (2024), a request that asks for a
comparison (``compare: true``) is sampled ``comparison_candidates`` times over,
and each shown choice is the best remaining candidate under one head drawn from
the posterior of the user's reward (contracts.reward_sketch): every choice is the
best answer under one plausible reading of the user's taste, so the choices are
good, and they differ where that taste is still uncertain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from contracts.reward_sketch import RewardSketch
from service.engine_interface import GenerationResult


def choose(features: np.ndarray, n: int, sketch: RewardSketch,
           rng: np.random.Generator) -> list[int]:
    """Indices (ascending) of ``n`` of the candidates ``features`` (M, D): for each shown
    choice one head drawn from the posterior picks its best candidate not yet chosen."""
    if n > features.shape[0]:
        raise ValueError(f"choose: {n} choices from {features.shape[0]} candidates")
    scores = sketch.scores(features, sketch.draw(rng, n))  # (n, M)
    chosen: list[int] = []
    for row in scores:
        chosen.append(next(int(i) for i in np.argsort(-row, kind="stable")
                           if int(i) not in chosen))
    # candidates are exchangeable samples: the order of the shown choices says nothing
    return sorted(chosen)


def chosen_result(result: GenerationResult, n: int, sketch: RewardSketch,
                  seed: int | None) -> tuple[GenerationResult, bool]:
    """``result``'s candidates reduced to the ``n`` choices ``choose`` picks (a seeded
    request picks the same ones again), and True; or to its first ``n`` (plain samples)
    and False when it has no features this sketch can score."""
    features = result.features
    if features is None or features.shape[1] != sketch.feature_dim:
        picks, thompson = list(range(min(n, len(result.choices)))), False
    else:
        picks, thompson = choose(features, n, sketch, np.random.default_rng(seed)), True
    return dataclasses.replace(
        result, choices=[result.choices[i] for i in picks],
        features=None if features is None else features[picks]), thompson
