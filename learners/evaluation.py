"""Score a policy on held-out prompts: mean reward, KL to its reference (the base model,
or the safety start users begin from: learners.anchor), and the rate of
answers that break each shared criterion (harmless, honest) as the shared heads judge it.

The gate compares the version being replaced with the candidate on the same
prompts with the same sampling seed, both scored by the current reward model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learners.gate import HeldOutEval
from learners.ppo import RewardFn, forward_response, reference_distribution
from learners.ppo_config import PPOConfig
from learners.ppo_math import exact_kl
from learners.rollout import sample_responses

# features (N, D) -> per shared criterion, the probability (N,) each answer breaks it
CostsFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module,
    tokenizer,
    prompts: list[list[int]],
    reward_fn: RewardFn,
    config: PPOConfig,
    seed: int,
    samples: int = 0,
    costs_fn: CostsFn | None = None,
    anchor: str | None = None,
    check_prompts: Sequence[list[int]] = (),
    adapter: str | None = None,
) -> HeldOutEval:
    """Sample responses to ``prompts`` (seeded) and return their mean reward and KL.

    With ``samples`` > len(prompts) the prompts are cycled to that many responses: a
    user has few held-out prompts, and the gate compares two means whose noise
    shrinks only with the number of responses (one response per prompt left
    ±0.5 user-standard units of noise on 4 prompts).
    ``check_prompts`` (red-team prompts) are answered once each and count toward the
    KL and the costs, not the reward: one answer there flipping between a refusal and
    compliance moves its reward by the heads' whole strength, and mixed into the
    mean (16 of 32 answers) such flips rejected 4 of a user's 7 updates as
    ``reward_regressed`` in a six-user demo run; the cost check judges them instead.
    ``adapter`` names the peft adapter evaluated (None: the active one), ``anchor`` the
    one the KL is measured to (None: the base model).
    """
    if adapter == getattr(policy, "active_adapter", None):
        adapter = None  # peft's plain forward: no per-row sub-batches
    if samples > len(prompts):
        prompts = [prompts[i % len(prompts)] for i in range(samples)]
    scored = len(prompts)
    prompts = list(prompts) + list(check_prompts)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id
    devices = [torch.device("cuda")] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        rollout = sample_responses(
            policy, prompts,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_token_id,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            max_prompt_tokens=config.max_prompt_tokens,
            adapter_names=None if adapter is None else [adapter] * len(prompts),
        )
    mask = rollout.response_mask.float()  # (B, R)
    logits, _ = forward_response(
        policy, rollout, adapter_names=None if adapter is None else [adapter] * len(prompts))
    log_probs = F.log_softmax(logits.float() / config.temperature, dim=-1)  # (B, R, V)
    del logits
    # the KL the gate bounds is to the PPO reference: the anchor, if any
    ref_log_probs, features = reference_distribution(policy, rollout, config.temperature, anchor)
    scores = torch.as_tensor(
        reward_fn(rollout.prompt_lists(), rollout.response_lists(), features), dtype=torch.float32
    )
    # each position's exact KL, not the drawn token's log-ratio: the same expectation, and a
    # 32-answer mean of k1 swung by 1.0-1.4 nats (sd) on published adapters, 0.8-1.2 so
    kl = (exact_kl(log_probs, ref_log_probs) * mask).sum(dim=1)  # (B,)
    costs = {} if costs_fn is None else {
        criterion: float(cost.float().mean()) for criterion, cost in costs_fn(features).items()}
    return HeldOutEval(reward=float(scores[:scored].mean()), kl=float(kl.mean()), costs=costs)
