"""`tailor bench learn` on a tiny model: both sides run, and RLlib's episode is one response."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from benchmarks.learn import BenchLearnConfig, run_bench_learn
from benchmarks.rllib_token_env import EMPTY_SLOT, BenchModelSpec, TokenEnv, even_token_share

TINY = BenchModelSpec(hidden_size=32, num_layers=2, vocab_size=100)


def test_token_env_episode_is_response_tokens_steps_with_reward_at_the_end() -> None:
    prompts = [[5, 6, 7], [8, 9, 10]]
    env = TokenEnv({"prompts": prompts, "response_tokens": 4, "vocab_size": 100})
    observation, _ = env.reset(seed=0)
    assert observation.shape == (7,) and env.observation_space.contains(observation)
    assert list(observation[:4]) == [EMPTY_SLOT] * 4 and list(observation[4:]) in prompts
    prompt = list(observation[4:])
    actions = [12, 13, 14, 16]  # 3 of 4 even: reward 0.75
    rewards, ends = [], []
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        ends.append(terminated or truncated)
    assert ends == [False, False, False, True]
    assert rewards == [0.0, 0.0, 0.0, even_token_share(actions)] and rewards[-1] == 0.75
    assert list(observation) == prompt + actions  # the full context, no padding left


def test_bench_learn_runs_both_sides_on_a_tiny_model() -> None:
    config = BenchLearnConfig(
        prompt_tokens=8, response_tokens=4, batch_size=4, iterations=1, warmup=0,
        users_per_batch=3,
    )
    result = run_bench_learn(config, TINY, Console(width=120))
    for key in ("ours_tokens_per_s", "ours_users_per_min", "rllib_tokens_per_s",
                "rllib_users_per_min", "ratio"):
        assert result[key] > 0, key
    # RLlib sampled whole responses: every episode exactly response_tokens steps.
    assert result["rllib_episode_len_mean"] == config.response_tokens
    # Same batch on both sides: tokens/s and users/min agree on each side.
    for side in ("ours", "rllib"):
        tokens_per_update = result[f"{side}_tokens_per_s"] * result[f"{side}_seconds_per_update"]
        assert np.isclose(tokens_per_update, config.batch_size * config.response_tokens), side
    # K = 3: three users' batches in each update, each as large as one user's alone
    per_minute = result["users_per_minute"]
    assert set(per_minute) == {"1", "3"} and per_minute["1"] == result["ours_users_per_min"]
    assert result["tokens_per_s"]["3"] / per_minute["3"] == pytest.approx(
        config.batch_size * config.response_tokens / 60)
    assert result["users_per_batch_gain"] == pytest.approx(per_minute["3"] / per_minute["1"])
    assert result["state_bytes_per_batched_user"] > 0
