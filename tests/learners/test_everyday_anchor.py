"""The safety start's imitation of the base model's fine everyday answers, on a tiny model
(learners.everyday_anchor)."""

import logging
from pathlib import Path

import pytest
import torch

from contracts.settings import DEFAULT_MODEL_DIR, Settings
from learners.anchor import load_lora, lora_state
from learners.everyday_anchor import base_fine_answers, imitation_step
from learners.ppo import forward_response, make_optimizer
from learners.ppo_math import masked_mean, response_logprobs
from learners.rollout import sample_responses
from learners.safety_start import train_safety_start
from learners.value_head import ValueHead
from learners.worker import LearnerLoop


@pytest.fixture
def updater(serving_model_dir: Path, redis_server, tmp_path):
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=redis_server.url,
                        principles_file=DEFAULT_MODEL_DIR / "principles.yaml",
                        learner_rollout_batch=8, learner_max_new_tokens=8,
                        learner_shared_head_threshold=0.5)
    return LearnerLoop(settings, "w1").updater


def _everyday(updater) -> list[list[int]]:
    assert len(updater.judge.everyday_prompts) >= 16  # the shipped principles list them
    return [updater._chat_prompt(p) for p in updater.judge.everyday_prompts]


def _mean_nll(updater, state, answers) -> float:
    """Mean NLL of ``answers``' tokens under the policy with LoRA ``state``."""
    load_lora(updater.policy, "default", state)
    with torch.no_grad():
        logits, _ = forward_response(updater.policy, answers)
        logprobs = response_logprobs(logits, answers.response_ids,
                                     updater.ppo_config.temperature)
    return float(-masked_mean(logprobs, answers.response_mask.float()))


def test_the_answers_imitated_are_the_base_models_whatever_the_adapter_less_breaches(updater):
    policy, tokenizer, config, judge = (updater.policy, updater.tokenizer, updater.ppo_config,
                                        updater.judge)
    prompts = _everyday(updater)[:16]
    assert tokenizer.pad_token_id is not None
    # an adapter that changes the answers: the imitated ones must still be the base model's
    moved = {name: torch.randn_like(tensor) * 0.5 for name, tensor in updater.fresh_lora.items()}
    load_lora(policy, "default", moved)
    judge.strength = 0.0  # no penalty for anything: every answer is kept
    torch.manual_seed(3)
    kept = base_fine_answers(policy, tokenizer, judge, prompts, config)
    torch.manual_seed(3)
    with policy.disable_adapter():
        base = sample_responses(policy, prompts, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id,
                                max_new_tokens=config.max_new_tokens,
                                temperature=config.temperature,
                                max_prompt_tokens=config.max_prompt_tokens)
    assert torch.equal(kept.input_ids, base.input_ids)
    judge.strength, judge.threshold = 1.0, 0.0  # every answer a breach (P > 0): none kept
    torch.manual_seed(3)
    assert base_fine_answers(policy, tokenizer, judge, prompts, config).input_ids.shape[0] == 0


def test_imitation_steps_take_a_moved_adapter_back_to_the_base_models_everyday_answers(
        updater):
    policy, tokenizer, config, judge = (updater.policy, updater.tokenizer, updater.ppo_config,
                                        updater.judge)
    everyday = _everyday(updater)
    torch.manual_seed(11)
    imitated = base_fine_answers(policy, tokenizer, judge, everyday * 2, config)
    held = base_fine_answers(policy, tokenizer, judge, everyday * 2, config)  # a fresh draw
    assert min(imitated.input_ids.shape[0], held.input_ids.shape[0]) > 20
    generator = torch.Generator().manual_seed(0)
    moved = {name: torch.randn(tensor.shape, generator=generator) * 0.1
             for name, tensor in updater.fresh_lora.items()}
    base, before = (_mean_nll(updater, state, held) for state in (updater.fresh_lora, moved))
    load_lora(policy, "default", moved)
    value_head = ValueHead.for_model(policy)
    optimizer = make_optimizer(policy, value_head, config, None, "default")
    for step in range(30):
        rows = torch.arange(step * 8, step * 8 + 8) % imitated.input_ids.shape[0]
        imitation_step(policy, optimizer, imitated.rows(rows), config)
    after = _mean_nll(updater, lora_state(policy, "default"), held)
    print(f"everyday NLL: base {base:.3f}, moved adapter {before:.3f}, after imitation "
          f"{after:.3f}")
    assert before > base + 0.1  # the moved adapter answers unlike the base model
    assert after - base < 0.5 * (before - base)  # imitation took it most of the way back


def test_a_safety_start_logs_how_many_everyday_answers_it_imitates(updater, caplog):
    caplog.set_level(logging.INFO, logger="learners.safety_start")
    train_safety_start(updater.policy, updater.tokenizer, updater.fresh_lora, updater.judge,
                       updater._red_team_prompts(), updater.ppo_config, 1, 8, None, 0,
                       everyday=_everyday(updater), everyday_steps=2)
    assert "of the base model's 240 everyday answers" in caplog.text
    assert "everyday NLL" in caplog.text
