"""Holding an adapter's everyday answers to the base model's: imitation of its fine answers.

The safety start (learners.safety_start) is PPO on red-team prompts alone, yet a LoRA
moves every answer: on the v3 default model it took formal answers to everyday
questions 37 -> 20 of 200 and bullet lists 24 -> 49, so a user who likes formal answers
started further from them and saw them beside their other favourites less often.

Everyday prompts in the PPO batch, held by the KL penalty alone, made it worse (concise
38 -> 96-114 of 200): a summed per-token KL is smallest for a short answer, so PPO
learned to be brief. What holds a distribution is imitating it, as InstructGPT's
PPO-ptx mixes the pretraining log-likelihood into PPO's objective: here the base
model's own answers to everyday prompts, sampled once, with the ones the shared heads
judge breaking a criterion (its brush-offs) left out, so the start keeps the base
model's everyday styles without its dismissive answers.
"""

from __future__ import annotations

import torch
from torch import nn

from contracts.features import adapters_disabled
from learners.ppo import forward_response, reference_forward
from learners.ppo_config import PPOConfig
from learners.ppo_math import masked_mean, response_logprobs
from learners.rollout import Rollout, sample_responses
from learners.shared_judge import SharedJudge


@torch.no_grad()
def base_fine_answers(policy: nn.Module, tokenizer, judge: SharedJudge,
                      prompts: list[list[int]], config: PPOConfig) -> Rollout:
    """The base model's answers (``policy`` with its adapters disabled) to ``prompts``, one
    each, less those the shared heads judge breaking a criterion (any penalty at the
    shared threshold). Randomness comes from torch's global generator."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    policy.eval()
    with adapters_disabled(policy):
        rollout = sample_responses(policy, prompts, eos_token_id=eos, pad_token_id=pad,
                                   max_new_tokens=config.max_new_tokens,
                                   temperature=config.temperature,
                                   max_prompt_tokens=config.max_prompt_tokens)
    _, features = reference_forward(policy, rollout, config.temperature)
    fine = judge.penalty(features.float().cpu()) == 0
    return rollout.rows(fine.to(rollout.input_ids.device))


def imitation_step(policy: nn.Module, optimizer: torch.optim.Optimizer, answers: Rollout,
                   config: PPOConfig) -> float:
    """One optimiser step on the mean negative log-likelihood of ``answers``' response
    tokens under ``policy``'s active adapter; returns that mean NLL."""
    for group in optimizer.param_groups:  # peft may have left only the active one trainable
        for parameter in group["params"]:
            parameter.requires_grad_(True)
    logits, _ = forward_response(policy, answers)
    logprobs = response_logprobs(logits, answers.response_ids, config.temperature)
    nll = -masked_mean(logprobs, answers.response_mask.float())
    optimizer.zero_grad(set_to_none=True)
    nll.backward()
    torch.nn.utils.clip_grad_norm_(
        [p for group in optimizer.param_groups for p in group["params"]], config.max_grad_norm)
    optimizer.step()
    policy.eval()
    return float(nll.detach())
