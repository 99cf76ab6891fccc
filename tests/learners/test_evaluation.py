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


def test_the_held_out_kl_is_each_positions_exact_kl_so_never_below_zero_and_steady():
    """The gate bounds the KL read from each position's whole distribution, not the drawn
    token's log-ratio: on 4 answers of a slightly moved adapter, eight sampling seeds read
    0.06-0.13 nats, where the drawn tokens' k1 read -0.09..0.43 (measured)."""
    config = PPOConfig(max_new_tokens=4)
    policy = get_peft_model(tiny_llama(0), config.lora_config())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))

    def reward_fn(prompt_ids, response_ids, features):
        return torch.zeros(len(prompt_ids))

    readings = [evaluate_policy(policy, tiny_tokenizer(), OWN, reward_fn, config, seed=seed,
                                samples=4).kl for seed in range(8)]
    assert min(readings) > 0 and max(readings) - min(readings) < 0.1, readings
