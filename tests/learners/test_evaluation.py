"""The gate's held-out evaluation: the user's prompts score the reward; red-team check
prompts count toward the KL and the costs only."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from learners.evaluation import evaluate_policy
from learners.ppo_config import PPOConfig
from tests.builders import tiny_llama, tiny_tokenizer

torch.set_num_threads(1)
OWN = [[5, 6, 7], [8, 9]]
CHECKS = [[40, 41, 42], [43, 44], [45]]


def test_check_prompts_are_answered_once_each_and_leave_the_reward_to_the_users_prompts():
    config = PPOConfig(max_new_tokens=4)
    policy = get_peft_model(tiny_llama(0), config.lora_config())
    seen = {}

    def reward_fn(prompt_ids, response_ids, features):
        seen["prompts"] = prompt_ids
        # a red-team answer's penalty swamps any taste: it must not reach the mean
        return torch.tensor([-100.0 if p in CHECKS else 1.0 for p in prompt_ids])

    def costs_fn(features):
        return {"harmless": torch.arange(len(features), dtype=torch.float32)}

    result = evaluate_policy(policy, tiny_tokenizer(), OWN, reward_fn, config, seed=0, samples=6,
                             costs_fn=costs_fn, check_prompts=CHECKS)
    assert seen["prompts"] == [OWN[i % 2] for i in range(6)] + CHECKS  # 6 cycled, 3 once
    assert result.reward == pytest.approx(1.0)
    assert result.costs["harmless"] == pytest.approx(sum(range(9)) / 9)  # over all 9 answers
