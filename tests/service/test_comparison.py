"""Choosing the choices of a comparison (service.comparison) from a reward sketch."""

import numpy as np
import pytest

from contracts.reward_sketch import RewardSketch
from service.comparison import choose

# Two features: the first is what the user's reward is known to like, the second a
# direction the reward is unsure about (mean 0, variance 1).
SURE, UNSURE = 1e-12, 1.0
CANDIDATES = np.array([
    [1.0, 0.0],   # best under the mean reward, and a near copy of it
    [1.0, 0.01],
    [0.9, 2.0],   # almost as good; much better or worse depending on the unsure direction
    [0.9, -2.0],
    [0.0, 0.0],   # worse under every plausible reward
], dtype=np.float32)


def sketch(variance: float) -> RewardSketch:
    return RewardSketch(offset=np.zeros(2, np.float32), offset_bias=np.zeros(1, np.float32),
                        projection=np.eye(2, dtype=np.float32),
                        projection_bias=np.zeros(2, np.float32),
                        mean=np.array([1.0, 0.0], np.float32),
                        covariance=np.diag([SURE, variance]).astype(np.float32))


def test_a_sure_reward_shows_its_best_candidates():
    for seed in range(20):
        assert choose(CANDIDATES, 2, sketch(SURE), np.random.default_rng(seed)) == [0, 1]


def test_an_unsure_reward_shows_the_candidates_it_is_unsure_between():
    """Under the mean, the two near copies would be shown side by side every time; heads
    drawn from the posterior put the candidates that differ where it is unsure there."""
    picks = [choose(CANDIDATES, 2, sketch(UNSURE), np.random.default_rng(seed))
             for seed in range(200)]
    informative = sum(bool({2, 3} & set(p)) for p in picks)
    assert informative >= 180
    assert all(4 not in p and len(set(p)) == 2 for p in picks)


def test_choices_are_distinct_and_the_same_seed_picks_the_same():
    one = choose(CANDIDATES, 4, sketch(UNSURE), np.random.default_rng(3))
    assert one == sorted(set(one)) and len(one) == 4
    assert choose(CANDIDATES, 4, sketch(UNSURE), np.random.default_rng(3)) == one
    with pytest.raises(ValueError, match="6 choices from 5 candidates"):
        choose(CANDIDATES, 6, sketch(UNSURE), np.random.default_rng(0))


def test_a_sketch_survives_bytes_and_names_a_bad_shape():
    again = RewardSketch.from_bytes(sketch(UNSURE).to_bytes())
    assert np.array_equal(again.covariance, sketch(UNSURE).covariance)
    with pytest.raises(ValueError, match="RewardSketch.mean has shape"):
        RewardSketch(offset=np.zeros(2), offset_bias=np.zeros(1), projection=np.eye(2),
                     projection_bias=np.zeros(2), mean=np.zeros(3), covariance=np.eye(2))
