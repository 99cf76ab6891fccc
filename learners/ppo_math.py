"""PPO's math, each piece a small free function unit-tested on its own (DESIGN.md decision 6).

Shapes: B rows, R response columns, V vocabulary. Per-token tensors over the
response are (B, R); column j is response token j.

KL estimators (http://joschu.net/blog/kl-approx.html), with r = π_ref / π_θ at a
sampled token: k1 = −log r (unbiased, can be negative per token) and
k3 = (r − 1) − log r (unbiased, never negative, lower variance). The penalty in
the reward uses k1 by default, as Ziegler et al. and InstructGPT do: with k1 the
shaped return is exactly score − β·log(π_θ/π_ref) of the sampled response, whose
expectation is the KL-regularised objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from learners.ppo_config import PPOConfig

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
    return token_logprobs(F.log_softmax(logits.float() / temperature, dim=-1), response_ids)


def token_logprobs(log_probs: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """The log-probs (B, R) of ``response_ids`` (B, R) picked from distributions (B, R, V)."""
    return torch.gather(log_probs, 2, response_ids.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension: (..., V) -> (...)."""
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def exact_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(π ‖ π_ref) at each position over the whole vocabulary: (..., V) log-probs of both
    -> (...). Unlike k1 or k3 at the sampled token it sees probability moved to tokens no
    rollout drew, and it has no sampling noise of its own at a position."""
    return (log_probs.exp() * (log_probs - ref_log_probs)).sum(dim=-1)


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
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
) -> torch.Tensor:
    """Per-token rewards (B, R): −β·KL at every response token, plus the score at the last one.

    ``scores`` (B,) is the sequence-level score, ``kl`` (B, R) the per-token estimate,
    ``response_mask`` (B, R) a prefix mask (1 up to and including the last real token),
    ``kl_coef`` one β or one per row (B,).
    """
    mask = response_mask.to(kl.dtype)
    if isinstance(kl_coef, torch.Tensor):
        kl_coef = kl_coef.to(kl.dtype).reshape(-1, 1)  # (B, 1): each row's β
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
