"""PPO on one user's LoRA adapter (DESIGN.md decision 6).

The policy π_θ is the base model plus the user's LoRA; the reference π_ref is the
same model inside `disable_adapter()` (never a second copy). A response is an
episode whose actions are its tokens: the reward is −β·KL at every token plus the
user's score at the last real token, γ = 1, advantages by GAE(λ), whitened over
the batch. The math lives in small free functions below, each unit-tested;
`ppo_update` reads top to bottom like CleanRL's `ppo.py`:
rollout → log-probs and reference → KL-shaped reward → advantages → minibatch
epochs → metrics.

Shapes: B rows, P prompt columns, R response columns, V vocabulary, H hidden.
Per-token tensors over the response are (B, R); column j is response token j.

KL estimators (http://joschu.net/blog/kl-approx.html), with r = π_ref / π_θ at a
sampled token: k1 = −log r (unbiased, can be negative per token) and
k3 = (r − 1) − log r (unbiased, never negative, lower variance). The penalty in
the reward uses k1 by default, as Ziegler et al. and InstructGPT do: with k1 the
shaped return is exactly score − β·log(π_θ/π_ref) of the sampled response, whose
expectation is the KL-regularised objective. `PPOStats.kl` is the mean per-response
sum of the estimator in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contracts.features import adapters_disabled, pool_hidden_states
from learners.anchor import LoraState, lora_swapped
from learners.ppo_config import PPOConfig
from learners.rollout import Rollout, position_ids_from_mask, sample_responses
from learners.value_head import ValueHead

# reward_fn(prompt_ids, response_ids, features (B, D)) -> scores (B,)
RewardFn = Callable[[list[list[int]], list[list[int]], torch.Tensor], torch.Tensor]


# --- masked statistics --------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over all entries, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1 (Bessel-corrected by default, when it can be)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count >= 2:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values − mean) / std over the masked entries; masked-out entries become 0.

    With ``shift_mean=False`` the mean is added back (only the scale changes).
    """
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def grouped_whiten(values: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """``masked_whiten`` within each group of rows (``groups``: (B,) ids), so that one
    group's spread of advantages does not set the scale of another's."""
    whitened = torch.zeros_like(values)
    for group in groups.unique():
        rows = groups == group
        whitened[rows] = masked_whiten(values[rows], mask[rows])
    return whitened


# --- log-probs, entropy, KL ---------------------------------------------------------


def response_logprobs(
    logits: torch.Tensor, response_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log π(token) of each response token under softmax(logits / temperature).

    ``logits`` (B, R, V) are the ones that *predict* the response tokens (columns
    P − 1 … P + R − 2 of the model output); ``response_ids`` (B, R). Dividing by the
    sampling temperature makes these the probabilities the tokens were drawn with.
    Computed in float32 whatever the model dtype.
    """
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, R, V)
    return torch.gather(log_probs, 2, response_ids.unsqueeze(-1)).squeeze(-1)  # (B, R)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension: (..., V) -> (...)."""
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(π_θ ‖ π_ref) at sampled tokens: log π_θ − log π_ref."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): (r − 1) − log r with r = π_ref / π_θ; >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def per_token_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """The per-token KL estimate named by ``estimator`` ('k1' or 'k3')."""
    if estimator == "k1":
        return kl_k1(logprobs, ref_logprobs)
    if estimator == "k3":
        return kl_k3(logprobs, ref_logprobs)
    raise ValueError(f"estimator={estimator!r}: use 'k1' or 'k3'.")


# --- rewards ------------------------------------------------------------------------


def apply_missing_eos_penalty(
    scores: torch.Tensor, ended_with_eos: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Subtract a fixed ``penalty`` from the score of each response that never emitted EOS.

    A response cut at the length limit is unfinished text; without this the policy
    can learn to ramble past the limit when the score favours long outputs.
    """
    return scores - penalty * (~ended_with_eos.bool()).to(scores.dtype)


def shaped_rewards(
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards (B, R): −β·KL at every response token, plus the score at the last one.

    ``scores`` (B,) is the sequence-level score, ``kl`` (B, R) the per-token estimate,
    ``response_mask`` (B, R) a prefix mask (1 up to and including the last real token).
    """
    mask = response_mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask  # (B, R)
    last_index = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index] += scores.to(rewards.dtype)
    return rewards


# --- advantages ---------------------------------------------------------------------


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gae_lambda: float,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns (each (B, R)), Schulman et al. 2016.

    δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}, with V = 0 after the last
    real token (the episode ends there). ``response_mask`` must be a prefix mask;
    entries past it come out 0. Returns are A_t + V_t, the value-loss targets.
    """
    mask = response_mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * gae_lambda * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    return advantages, advantages + values


# --- losses -------------------------------------------------------------------------


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip loss, masked mean of max(−A·ρ, −A·clip(ρ, 1 ± ε)); and the clipped fraction.

    ρ = π_θ / π_θ_old per token. Taking the max of the two losses is the pessimistic
    bound of Schulman et al. 2017: a step gains nothing by moving ρ outside [1 − ε, 1 + ε].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """½·masked mean of max((V − G)², (V_clip − G)²), V_clip = V_old + clip(V − V_old, ±c);
    and the clipped fraction. Keeps the critic from jumping away from its rollout values.
    """
    step = torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    values_clipped = old_values + step
    unclipped = (values - returns) ** 2
    clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


# --- KL coefficient β ---------------------------------------------------------------


@dataclass
class FixedKLController:
    """β that never changes."""

    value: float  # β

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: fixed β."""


@dataclass
class AdaptiveKLController:
    """Proportional β controller of Ziegler et al. 2019 (arXiv:1909.08593, §2.2).

    e = clip(KL / KL_target − 1, −0.2, 0.2); β ← β·(1 + e·n_steps / horizon).
    """

    value: float  # β
    target: float  # KL_target, nats per response
    horizon: int  # responses over which β may change by a factor of about e^{±0.2}

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β after a batch of ``n_steps`` responses whose mean KL was ``current_kl``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


KLController = FixedKLController | AdaptiveKLController


def make_kl_controller(config: PPOConfig, kl_coef: float | None = None) -> KLController:
    """The β controller ``config`` asks for, starting at ``kl_coef`` (a user's saved β) or
    ``config.kl_coef``. Keep it across a user's updates: the adaptive one carries state."""
    start = config.kl_coef if kl_coef is None else kl_coef
    if config.kl_target is None:
        return FixedKLController(start)
    return AdaptiveKLController(start, config.kl_target, config.kl_horizon)


# --- the update ---------------------------------------------------------------------


@dataclass
class PPOStats:
    """What one `ppo_update` did; losses and ratios are means over its minibatch steps."""

    score: float  # mean reward_fn score (before the no-EOS penalty)
    reward: float  # mean total return: score − no-EOS penalty − β·KL
    kl: float  # mean per-response KL(π_θ ‖ π_ref) of the rollouts, nats (estimator in use)
    kl_coef: float  # β used for this batch's rewards
    next_kl_coef: float  # β after the controller's update (store it for the user's next update)
    policy_loss: float  # clipped policy loss
    value_loss: float  # clipped value loss
    entropy: float  # mean per-token entropy of π_θ (temperature applied), nats
    clip_fraction: float  # share of tokens whose policy ratio was clipped
    value_clip_fraction: float  # share of tokens whose value prediction was clipped
    approx_kl: float  # mean k3 estimate of KL(π_θ_old ‖ π_θ) over the steps: size of the update
    eos_fraction: float  # share of responses that ended with EOS
    response_length: float  # mean response tokens per row (EOS included)
    tokens: int  # real (non-pad) prompt + response tokens in the batch
    response_tokens: int  # real response tokens in the batch (the PPO actions)
    seconds: float  # wall time of the whole update, rollout included


def make_optimizer(
    policy: nn.Module,
    value_head: ValueHead,
    config: PPOConfig,
    value_learning_rate: float | None = None,
) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters (the LoRA) at ``config.learning_rate`` and
    the value head at ``value_learning_rate`` (None: the same rate).

    The learners give the critic a rate of its own (`LearnerOptions.value_learning_rate`,
    10x the LoRA's): until V(s_t) knows the style an answer has taken, every later token
    of a disliked answer gets the whole negative advantage, and pushing those
    near-certain tokens down flattens the policy (measured: KL to the base 15-30 nats
    in 4 iterations, style unchanged). A 10x faster linear head keeps the KL at ~1 nat
    while the style shifts.
    """
    trainable = [p for p in policy.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "make_optimizer: the policy has no trainable parameters; wrap the base model with "
            "peft.get_peft_model(base, PPOConfig().lora_config()) first."
        )
    critic_rate = config.learning_rate if value_learning_rate is None else value_learning_rate
    return torch.optim.AdamW(
        [{"params": trainable}, {"params": list(value_head.parameters()), "lr": critic_rate}],
        lr=config.learning_rate,
        eps=1e-5,
        weight_decay=0.0,
    )


def _run_on_rollout(model: nn.Module, rollout: Rollout, rows: torch.Tensor | slice):
    """``model``'s output on rollout rows: logits (B, R + 1, V) of the last R + 1 columns
    (P − 1 … P + R − 1; the LM head skips the prompt) and every layer's hidden states."""
    attention_mask = rollout.attention_mask[rows]
    return model(
        input_ids=rollout.input_ids[rows],
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=rollout.response_mask.shape[1] + 1,
    )


def forward_response(
    model: nn.Module, rollout: Rollout, rows: torch.Tensor | slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on rollout rows; return the logits (B, R, V) that predict the response
    tokens and the last hidden states (B, R, H) at the same columns (the value-head input)."""
    output = _run_on_rollout(model, rollout, rows)
    logits = output.logits[:, :-1]  # (B, R, V): column P − 1 + j predicts response token j
    hidden = output.hidden_states[-1][:, rollout.context_length - 1 : -1]  # (B, R, H)
    return logits, hidden


@torch.no_grad()
def reference_forward(
    policy: nn.Module, rollout: Rollout, temperature: float, anchor: LoraState | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π_ref of each response token (B, R) and the reward model's features (B, 2H), from
    one pass of the base model (``policy`` with its adapters disabled) over the rollout.

    The pass is the base model on prompt + response: exactly what
    `contracts.features.sequence_features` computes, so its features come for free.
    With an ``anchor`` (learners.anchor) π_ref is the policy with the anchor's LoRA
    weights instead, a second pass; the features stay the base model's.
    """
    with adapters_disabled(policy):
        output = _run_on_rollout(policy, rollout, slice(None))
    logits = output.logits[:, :-1]
    features = pool_hidden_states(
        output.hidden_states[-1], rollout.full_response_mask * rollout.attention_mask
    )  # (B, 2H)
    if anchor is not None:
        with lora_swapped(policy, anchor):
            logits, _ = forward_response(policy, rollout)
    return response_logprobs(logits, rollout.response_ids, temperature), features


def ppo_update(
    policy: nn.Module,
    value_head: ValueHead,
    optimizer: torch.optim.Optimizer,
    tokenizer,
    prompts: list[list[int]],
    reward_fn: RewardFn,
    config: PPOConfig,
    kl_controller: KLController | None = None,
    row_groups: list[int] | None = None,
    anchor: LoraState | None = None,
) -> PPOStats:
    """One PPO iteration on ``policy``'s active adapter: sample a response per prompt, score
    it, and take ``ppo_epochs × num_minibatches`` optimiser steps.

    ``policy`` is a `peft.PeftModel` (its reference is itself under `disable_adapter()`);
    ``optimizer`` holds the LoRA and value-head parameters (see `make_optimizer`);
    ``tokenizer`` gives the EOS and pad ids; ``reward_fn(prompt_ids, response_ids, features)``
    returns one score per row, where response_ids exclude the final EOS and features (B, D)
    are `contracts.features` pooled base-model hidden states of prompt + response.
    ``kl_controller`` carries β between a user's updates (default: `make_kl_controller(config)`).
    ``row_groups`` (one id per prompt) whitens advantages within each group rather than
    over the whole batch: rows whose rewards differ in kind (a user's own prompts and
    red-team prompts, where the shared heads' penalty spreads rewards far wider) then
    each keep their own signal.
    ``anchor`` (a LoRA state of ``policy``'s adapter) replaces the base model as the KL
    reference: the safety start users begin from (learners.anchor).
    Randomness comes from torch's global generator. The policy is left in eval mode.
    """
    if len(prompts) < config.num_minibatches:
        raise ValueError(
            f"ppo_update: {len(prompts)} prompts cannot fill PPOConfig.num_minibatches="
            f"{config.num_minibatches}; give at least that many prompts or lower num_minibatches."
        )
    if row_groups is not None and len(row_groups) != len(prompts):
        raise ValueError(f"ppo_update: {len(row_groups)} row_groups for {len(prompts)} prompts; "
                         "give one group id per prompt.")
    eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        raise ValueError("ppo_update: the tokenizer has no eos_token_id; set tokenizer.eos_token.")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id
    kl_controller = kl_controller if kl_controller is not None else make_kl_controller(config)
    started = time.perf_counter()
    # Dropout off: old and new log-probs must come from the same function of θ.
    policy.eval()
    temperature = config.temperature

    # 1. Rollout: one sampled response per prompt, with the adapter on (KV-cached generate).
    rollout = sample_responses(
        policy,
        prompts,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        max_new_tokens=config.max_new_tokens,
        temperature=temperature,
        max_prompt_tokens=config.max_prompt_tokens,
    )
    b_response_ids = rollout.response_ids  # (B, R)
    b_mask = rollout.response_mask.float()  # (B, R)
    batch_size = b_response_ids.shape[0]

    # 2. Log-probs of π_θ_old and π_ref, values, and the reward model's features.
    with torch.no_grad():
        logits, hidden = forward_response(policy, rollout)
        b_logprobs = response_logprobs(logits, b_response_ids, temperature)  # (B, R)
        b_values = value_head(hidden) * b_mask  # (B, R)
        del logits, hidden
        b_ref_logprobs, b_features = reference_forward(policy, rollout, temperature, anchor)

    # 3. KL-shaped reward: score at the last real token, −β·KL at every token.
    with torch.no_grad():
        b_scores = reward_fn(rollout.prompt_lists(), rollout.response_lists(), b_features)
        b_scores = torch.as_tensor(b_scores, dtype=torch.float32, device=b_mask.device).reshape(-1)
        if b_scores.shape[0] != batch_size:
            raise ValueError(
                f"reward_fn returned {b_scores.shape[0]} scores for {batch_size} responses; "
                "return one score per row, shape (B,)."
            )
        if not torch.isfinite(b_scores).all():  # one NaN would reach every weight
            raise ValueError(f"reward_fn returned non-finite scores for "
                             f"{int((~torch.isfinite(b_scores)).sum())} of {batch_size} rows; "
                             "the policy is left as it was.")
        b_penalised_scores = apply_missing_eos_penalty(
            b_scores, rollout.ended_with_eos, config.missing_eos_penalty
        )
        b_kl = per_token_kl(b_logprobs, b_ref_logprobs, config.kl_estimator) * b_mask  # (B, R)
        kl_coef = kl_controller.value
        b_rewards = shaped_rewards(b_penalised_scores, b_kl, b_mask, kl_coef)  # (B, R)

        # 4. Advantages (GAE, γ = 1) and returns; whiten advantages over the batch's tokens.
        b_advantages, b_returns = gae_advantages(b_rewards, b_values, b_mask, config.gae_lambda)
        if config.whiten_advantages and row_groups is not None:
            groups = torch.as_tensor(row_groups, device=b_mask.device)
            b_advantages = grouped_whiten(b_advantages, b_mask, groups)
        elif config.whiten_advantages:
            b_advantages = masked_whiten(b_advantages, b_mask)

    # 5. Minibatch epochs: clipped policy loss + vf_coef·clipped value loss − ent_coef·entropy.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step_stats: dict[str, list[torch.Tensor]] = {
        key: [] for key in ("pg", "vf", "entropy", "clip", "vclip", "approx_kl")
    }
    for _epoch in range(config.ppo_epochs):
        b_order = torch.randperm(batch_size, device=b_mask.device)
        for mb_rows in torch.tensor_split(b_order, config.num_minibatches):
            mb_mask = b_mask[mb_rows]
            logits, hidden = forward_response(policy, rollout, mb_rows)
            mb_logits = logits.float() / temperature  # (b, R, V), the sampling distribution
            mb_logprobs = response_logprobs(mb_logits, b_response_ids[mb_rows], 1.0)
            mb_values = value_head(hidden)  # (b, R)
            pg_loss, clip_fraction = clipped_policy_loss(
                mb_logprobs, b_logprobs[mb_rows], b_advantages[mb_rows], mb_mask, config.clip_range
            )
            vf_loss, value_clip_fraction = clipped_value_loss(
                mb_values, b_values[mb_rows], b_returns[mb_rows], mb_mask, config.clip_range_value
            )
            entropy = masked_mean(entropy_from_logits(mb_logits), mb_mask)
            loss = pg_loss + config.vf_coef * vf_loss - config.ent_coef * entropy

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()

            with torch.no_grad():
                log_ratio = mb_logprobs - b_logprobs[mb_rows]
                approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mb_mask)  # k3
                step_stats["approx_kl"].append(approx_kl)
            step_stats["pg"].append(pg_loss.detach())
            step_stats["vf"].append(vf_loss.detach())
            step_stats["entropy"].append(entropy.detach())
            step_stats["clip"].append(clip_fraction)
            step_stats["vclip"].append(value_clip_fraction)

    # 6. β update and metrics.
    mean_kl = b_kl.sum(dim=1).mean().item()
    kl_controller.update(mean_kl, batch_size)
    means = {key: torch.stack(values).mean().item() for key, values in step_stats.items()}
    response_tokens = int(b_mask.sum().item())
    return PPOStats(
        score=b_scores.mean().item(),
        reward=b_rewards.sum(dim=1).mean().item(),
        kl=mean_kl,
        kl_coef=kl_coef,
        next_kl_coef=kl_controller.value,
        policy_loss=means["pg"],
        value_loss=means["vf"],
        entropy=means["entropy"],
        clip_fraction=means["clip"],
        value_clip_fraction=means["vclip"],
        approx_kl=means["approx_kl"],
        eos_fraction=rollout.ended_with_eos.float().mean().item(),
        response_length=response_tokens / batch_size,
        tokens=int(rollout.attention_mask.sum().item()),
        response_tokens=response_tokens,
        seconds=time.perf_counter() - started,
    )
