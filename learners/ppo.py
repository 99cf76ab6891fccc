"""PPO on users' LoRA adapters, one user or several in one batch (DESIGN.md decision 6).

The policy π_θ is the base model plus a user's LoRA; the reference π_ref is the
same model inside `disable_adapter()` (never a second copy), or the adapter every
user starts from (learners.anchor). A response is an episode whose actions are
its tokens: the reward is −β·KL at every token plus the user's score at the last
real token, γ = 1, advantages by GAE(λ), whitened over the user's rows. The math
lives in `learners.ppo_math`, each piece unit-tested; `ppo_step` reads top to
bottom like CleanRL's `ppo.py`: log-probs and reference → KL-shaped reward →
advantages → minibatch epochs → metrics. With ``PPOConfig.kl_loss_coef`` the loss
also charges the exact KL to π_ref at every rollout position, over the whole
vocabulary: the reward's −β·KL sees only the tokens drawn.

Several users in one batch (`ppo_update_batch`): each user is a `PPOMember` with
a peft adapter of their own, and every forward runs all members' rows at once,
each row through its user's adapter (peft's per-row ``adapter_names``; the base
model's matrices are shared, which is where a GPU's time goes). What stays per
user is exactly what training that user alone does: their reward, value head,
β, whitening, minibatch order (their own rows, split as alone) and optimiser
step (their own gradient clip). The batch's loss is the sum of the members'
losses and no row touches another user's weights, so each user's gradient is
the one they would get alone (tests/learners/test_ppo_batch.py holds it to
float tolerance). A member whose reward fails is dropped from the step; the
others go on.

Shapes: B rows, P prompt columns, R response columns, V vocabulary, H hidden.
`PPOStats.kl` is the mean per-response sum of the KL estimator in use;
`PPOStats.kl_exact` the same sum of each position's exact KL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contracts.features import adapters_disabled, pool_hidden_states
from learners.ppo_config import PPOConfig
from learners.ppo_math import (
    KLController,
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    exact_kl,
    gae_advantages,
    grouped_whiten,
    make_kl_controller,
    masked_mean,
    masked_whiten,
    per_token_kl,
    response_logprobs,
    shaped_rewards,
    token_logprobs,
)
from learners.rollout import Rollout, position_ids_from_mask, sample_responses
from learners.value_head import ValueHead

# reward_fn(prompt_ids, response_ids, features (B, D)) -> scores (B,)
RewardFn = Callable[[list[list[int]], list[list[int]], torch.Tensor], torch.Tensor]


# --- the update ---------------------------------------------------------------------


@dataclass
class PPOStats:
    """What one PPO iteration did for one user; losses and ratios are means over its minibatch steps."""

    score: float  # mean reward_fn score (before the no-EOS penalty)
    reward: float  # mean total return: score − no-EOS penalty − β·KL
    kl: float  # mean per-response KL(π_θ ‖ π_ref) of the rollouts, nats (estimator in use)
    # the same KL summed from each position's exact KL over the vocabulary (ppo_math.exact_kl):
    # no sampling noise at a position, so a steadier reading of the adapter's distance
    kl_exact: float
    kl_max: float  # the largest one response's exact KL: whether a few answers make the mean
    kl_coef: float  # β used for this batch's rewards
    next_kl_coef: float  # β after the controller's update (store it for the user's next update)
    policy_loss: float  # clipped policy loss
    value_loss: float  # clipped value loss
    entropy: float  # mean per-token entropy of π_θ (temperature applied), nats
    clip_fraction: float  # share of tokens whose policy ratio was clipped
    value_clip_fraction: float  # share of tokens whose value prediction was clipped
    approx_kl: float  # mean k3 estimate of KL(π_θ_old ‖ π_θ) over the steps: size of the update
    steps: int  # optimiser steps taken (fewer than ppo_epochs × num_minibatches: target_kl)
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
    adapter: str | None = None,
) -> torch.optim.Optimizer:
    """AdamW over the policy's trainable parameters (the LoRA; with ``adapter``, that peft
    adapter's only) at ``config.learning_rate`` and the value head at
    ``value_learning_rate`` (None: the same rate).

    The learners give the critic a rate of its own (`LearnerOptions.value_learning_rate`,
    10x the LoRA's): until V(s_t) knows the style an answer has taken, every later token
    of a disliked answer gets the whole negative advantage, and pushing those
    near-certain tokens down flattens the policy (measured: KL to the base 15-30 nats
    in 4 iterations, style unchanged). A 10x faster linear head keeps the KL at ~1 nat
    while the style shifts.
    """
    # by name for a named adapter: peft marks only the active adapter trainable again
    # whenever adapters are re-enabled (after every disable_adapter())
    trainable = [p for name, p in policy.named_parameters()
                 if (p.requires_grad if adapter is None else
                     "lora_" in name and f".{adapter}." in name)]
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



def _run_on_rollout(model: nn.Module, rollout: Rollout, rows: torch.Tensor | slice,
                    adapter_names: list[str] | None = None):
    """``model``'s output on rollout rows: logits (B, R + 1, V) of the last R + 1 columns
    (P − 1 … P + R − 1; the LM head skips the prompt) and every layer's hidden states.
    ``adapter_names`` (one per row of ``rows``) runs each row through its own adapter."""
    attention_mask = rollout.attention_mask[rows]
    per_row = {} if adapter_names is None else {"adapter_names": adapter_names}
    return model(
        input_ids=rollout.input_ids[rows],
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=rollout.response_mask.shape[1] + 1,
        **per_row,
    )


def forward_response(
    model: nn.Module, rollout: Rollout, rows: torch.Tensor | slice = slice(None),
    adapter_names: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on rollout rows; return the logits (B, R, V) that predict the response
    tokens and the last hidden states (B, R, H) at the same columns (the value-head input)."""
    output = _run_on_rollout(model, rollout, rows, adapter_names)
    logits = output.logits[:, :-1]  # (B, R, V): column P − 1 + j predicts response token j
    hidden = output.hidden_states[-1][:, rollout.context_length - 1 : -1]  # (B, R, H)
    return logits, hidden


@torch.no_grad()
def reference_forward(
    policy: nn.Module, rollout: Rollout, temperature: float, anchor: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π_ref of each response token (B, R) and the reward model's features (B, 2H), from
    one pass of the base model (``policy`` with its adapters disabled) over the rollout.

    The pass is the base model on prompt + response: exactly what
    `contracts.features.sequence_features` computes, so its features come for free.
    With an ``anchor`` (the name of a peft adapter: learners.anchor) π_ref is the policy
    through that adapter instead, a second pass; the features stay the base model's.
    """
    log_probs, features = reference_distribution(policy, rollout, temperature, anchor)
    return token_logprobs(log_probs, rollout.response_ids), features


@torch.no_grad()
def reference_distribution(
    policy: nn.Module, rollout: Rollout, temperature: float, anchor: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`reference_forward` with π_ref's whole distribution (B, R, V) at each response
    position instead of the drawn tokens' log-probs."""
    with adapters_disabled(policy):
        output = _run_on_rollout(policy, rollout, slice(None))
    logits = output.logits[:, :-1]
    features = pool_hidden_states(
        output.hidden_states[-1], rollout.full_response_mask * rollout.attention_mask
    )  # (B, 2H)
    if anchor is not None:
        logits, _ = forward_response(policy, rollout,
                                     adapter_names=[anchor] * rollout.input_ids.shape[0])
    return F.log_softmax(logits.float() / temperature, dim=-1), features


@dataclass
class PPOMember:
    """One user's share of a PPO iteration: their prompts, adapter, critic and optimiser."""

    prompts: list[list[int]]
    reward_fn: RewardFn
    value_head: ValueHead
    optimizer: torch.optim.Optimizer  # this user's LoRA and value head only (make_optimizer)
    kl_controller: KLController | None = None  # carries β between updates; None: a new one
    adapter: str | None = None  # the peft adapter of this user's LoRA; None: the active one
    # One id per prompt: advantages are whitened within each group (a user's own prompts
    # and red-team prompts, where the shared heads' penalty spreads rewards far wider).
    row_groups: list[int] | None = None
    generator: torch.Generator | None = None  # minibatch order; None: torch's global one
    # One factor per prompt on β (None: 1 for all): red-team rows are held nearer the
    # reference than the user's own (learners.update_job says why).
    kl_weights: list[float] | None = None
    # One factor per prompt on the exact-KL loss term (PPOConfig.kl_loss_coef; None: 1)
    kl_loss_weights: list[float] | None = None

    def check(self, config: PPOConfig) -> None:
        if len(self.prompts) < config.num_minibatches:
            raise ValueError(
                f"ppo_update: {len(self.prompts)} prompts cannot fill PPOConfig.num_minibatches="
                f"{config.num_minibatches}; give at least that many prompts or lower "
                "num_minibatches.")
        if self.row_groups is not None and len(self.row_groups) != len(self.prompts):
            raise ValueError(f"ppo_update: {len(self.row_groups)} row_groups for "
                             f"{len(self.prompts)} prompts; give one group id per prompt.")
        if self.kl_weights is not None and len(self.kl_weights) != len(self.prompts):
            raise ValueError(f"ppo_update: {len(self.kl_weights)} kl_weights for "
                             f"{len(self.prompts)} prompts; give one factor per prompt.")
        if self.kl_loss_weights is not None and len(self.kl_loss_weights) != len(self.prompts):
            raise ValueError(f"ppo_update: {len(self.kl_loss_weights)} kl_loss_weights for "
                             f"{len(self.prompts)} prompts; give one factor per prompt.")


@dataclass
class _Scored:
    """A member's rollout rows with everything the minibatch epochs need."""

    member: PPOMember
    rows: slice  # the member's rows of the batch
    logprobs: torch.Tensor  # (b, R) log π_θ_old
    values: torch.Tensor  # (b, R)
    scores: torch.Tensor  # (b,) reward_fn's
    kl: torch.Tensor  # (b, R) per-token KL to the reference
    kl_exact: torch.Tensor  # (b, R) exact KL(π_θ_old ‖ π_ref) at each position
    ref_log_probs: torch.Tensor | None  # (b, R, V) π_ref, for PPOConfig.kl_loss_coef
    kl_coef: float
    rewards: torch.Tensor  # (b, R) shaped
    advantages: torch.Tensor  # (b, R)
    returns: torch.Tensor  # (b, R)


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
    anchor: str | None = None,
) -> PPOStats:
    """One PPO iteration on ``policy``'s active adapter: sample a response per prompt, score
    it, and take ``ppo_epochs × num_minibatches`` optimiser steps.

    ``policy`` is a `peft.PeftModel` (its reference is itself under `disable_adapter()`);
    ``optimizer`` holds the LoRA and value-head parameters (see `make_optimizer`);
    ``tokenizer`` gives the EOS and pad ids; ``reward_fn(prompt_ids, response_ids, features)``
    returns one score per row, where response_ids exclude the final EOS and features (B, D)
    are `contracts.features` pooled base-model hidden states of prompt + response.
    ``kl_controller`` carries β between a user's updates (default: `make_kl_controller(config)`).
    ``row_groups`` (one id per prompt) whitens advantages within each group.
    ``anchor`` (a peft adapter's name) replaces the base model as the KL reference: the
    safety start users begin from (learners.anchor).
    Randomness comes from torch's global generator. The policy is left in eval mode.
    """
    member = PPOMember(prompts, reward_fn, value_head, optimizer, kl_controller,
                       row_groups=row_groups)
    (outcome,) = ppo_update_batch(policy, tokenizer, [member], config, anchor)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def ppo_update_batch(
    policy: nn.Module, tokenizer, members: list[PPOMember], config: PPOConfig,
    anchor: str | None = None,
) -> list[PPOStats | Exception]:
    """One PPO iteration for every member at once: one rollout batch (each row through its
    member's adapter), then `ppo_step`. Per member, its stats, or the error that dropped it
    (its reward failed); a member dropped is left as it was."""
    for member in members:
        member.check(config)
    eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        raise ValueError("ppo_update: the tokenizer has no eos_token_id; set tokenizer.eos_token.")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id
    started = time.perf_counter()
    # Dropout off: old and new log-probs must come from the same function of θ.
    policy.eval()
    # 1. Rollout: one sampled response per prompt, each through its user's adapter.
    rollout = sample_responses(
        policy,
        [prompt for member in members for prompt in member.prompts],
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        max_prompt_tokens=config.max_prompt_tokens,
        adapter_names=_row_adapters(members, policy),
    )
    return ppo_step(policy, rollout, members, config, anchor, started)


def ppo_step(
    policy: nn.Module, rollout: Rollout, members: list[PPOMember], config: PPOConfig,
    anchor: str | None = None, started: float | None = None,
) -> list[PPOStats | Exception]:
    """The PPO iteration after the rollout: ``rollout``'s rows are the members' prompts in
    order (``len(member.prompts)`` rows each)."""
    started = time.perf_counter() if started is None else started
    if rollout.input_ids.shape[0] != sum(len(m.prompts) for m in members):
        raise ValueError(f"ppo_step: {rollout.input_ids.shape[0]} rollout rows for "
                         f"{sum(len(m.prompts) for m in members)} prompts of the members.")
    policy.eval()
    temperature = config.temperature
    row_adapters = _row_adapters(members, policy)
    b_response_ids = rollout.response_ids  # (B, R)
    b_mask = rollout.response_mask.float()  # (B, R)

    # 2. Log-probs of π_θ_old and π_ref, and the reward model's features.
    with torch.no_grad():
        logits, hidden = forward_response(policy, rollout, adapter_names=row_adapters)
        log_probs = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, R, V)
        del logits
        b_logprobs = token_logprobs(log_probs, b_response_ids)  # (B, R)
        ref_log_probs, b_features = reference_distribution(policy, rollout, temperature, anchor)
        b_ref_logprobs = token_logprobs(ref_log_probs, b_response_ids)
        b_exact_kl = exact_kl(log_probs, ref_log_probs) * b_mask  # (B, R)
        del log_probs
        if not config.kl_loss_coef:  # only the loss term needs π_ref's distributions kept
            ref_log_probs = None
    prompt_lists, response_lists = rollout.prompt_lists(), rollout.response_lists()

    # 3.-4. Per member: values, score, KL-shaped reward, advantages and returns.
    outcomes: list[PPOStats | Exception | None] = [None] * len(members)
    scored: list[tuple[int, _Scored]] = []
    start = 0
    for index, member in enumerate(members):
        rows = slice(start, start + len(member.prompts))
        start = rows.stop
        try:
            scored.append((index, _score(member, rows, hidden, b_mask, b_logprobs,
                                         b_ref_logprobs, b_features, prompt_lists,
                                         response_lists, rollout, config,
                                         b_exact_kl, ref_log_probs)))
        except Exception as err:  # one user's failed reward drops that user only
            outcomes[index] = err
    del hidden
    if not scored:
        return outcomes

    # 5. Minibatch epochs: clipped policy loss + vf_coef·clipped value loss − ent_coef·entropy,
    # summed over the members; each steps its own optimiser on its own gradient. (The
    # reference pass re-enabled the adapters, and with them peft made only the active one
    # trainable: every member's weights are made so again.)
    for _, part in scored:
        for group in part.member.optimizer.param_groups:
            for parameter in group["params"]:
                parameter.requires_grad_(True)
    step_stats = {index: {key: [] for key in ("pg", "vf", "entropy", "clip", "vclip", "approx_kl")}
                  for index, _ in scored}
    stopped: set[int] = set()  # members whose steps config.target_kl ended
    for _epoch in range(config.ppo_epochs):
        splits = {}
        for index, part in scored:
            if index not in stopped:
                order = torch.randperm(part.rows.stop - part.rows.start,
                                       generator=part.member.generator)
                splits[index] = [rows + part.rows.start for rows in
                                 torch.tensor_split(order, config.num_minibatches)]
        for minibatch in range(config.num_minibatches):
            stepping = [(index, part) for index, part in scored
                        if index in splits and index not in stopped]
            if stepping:
                stopped |= _minibatch_step(policy, rollout, stepping,
                                           [splits[index][minibatch] for index, _ in stepping],
                                           b_mask, row_adapters, config, step_stats)

    # 6. β update and metrics, per member.
    seconds = time.perf_counter() - started
    for index, part in scored:
        outcomes[index] = _stats(part, step_stats[index], rollout, b_mask, seconds)
    return outcomes


def _row_adapters(members: list[PPOMember], policy: nn.Module) -> list[str] | None:
    """Each row's adapter name, or None when every member uses the active adapter (then
    peft's plain forward runs, not its per-row one: no sub-batches to gather)."""
    active = getattr(policy, "active_adapter", None)
    if all(member.adapter in (None, active) for member in members):
        return None
    if any(member.adapter is None for member in members):
        raise ValueError("ppo_update: name every member's adapter, or none (the active one).")
    return [member.adapter for member in members for _ in member.prompts]


@torch.no_grad()
def _score(member: PPOMember, rows: slice, hidden: torch.Tensor, b_mask: torch.Tensor,
           b_logprobs: torch.Tensor, b_ref_logprobs: torch.Tensor, b_features: torch.Tensor,
           prompt_lists: list[list[int]], response_lists: list[list[int]], rollout: Rollout,
           config: PPOConfig, b_exact_kl: torch.Tensor,
           ref_log_probs: torch.Tensor | None) -> _Scored:
    mask = b_mask[rows]
    batch_size = mask.shape[0]
    scores = member.reward_fn(prompt_lists[rows], response_lists[rows], b_features[rows])
    scores = torch.as_tensor(scores, dtype=torch.float32, device=mask.device).reshape(-1)
    if scores.shape[0] != batch_size:
        raise ValueError(f"reward_fn returned {scores.shape[0]} scores for {batch_size} "
                         "responses; return one score per row, shape (B,).")
    if not torch.isfinite(scores).all():  # one NaN would reach every weight
        raise ValueError(f"reward_fn returned non-finite scores for "
                         f"{int((~torch.isfinite(scores)).sum())} of {batch_size} rows; "
                         "the policy is left as it was.")
    if member.kl_controller is None:
        member.kl_controller = make_kl_controller(config)
    values = member.value_head(hidden[rows]) * mask  # (b, R)
    penalised = apply_missing_eos_penalty(scores, rollout.ended_with_eos[rows],
                                          config.missing_eos_penalty)
    kl = per_token_kl(b_logprobs[rows], b_ref_logprobs[rows], config.kl_estimator) * mask
    kl_coef = member.kl_controller.value
    row_coef = kl_coef if member.kl_weights is None else kl_coef * torch.tensor(
        member.kl_weights, dtype=torch.float32, device=mask.device)
    rewards = shaped_rewards(penalised, kl, mask, row_coef)  # (b, R)
    advantages, returns = gae_advantages(rewards, values, mask, config.gae_lambda)
    if config.whiten_advantages and member.row_groups is not None:
        groups = torch.as_tensor(member.row_groups, device=mask.device)
        advantages = grouped_whiten(advantages, mask, groups)
    elif config.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return _Scored(member, rows, b_logprobs[rows], values, scores, kl, b_exact_kl[rows],
                   None if ref_log_probs is None else ref_log_probs[rows], kl_coef, rewards,
                   advantages, returns)


def _minibatch_step(policy: nn.Module, rollout: Rollout, scored: list[tuple[int, _Scored]],
                    member_rows: list[torch.Tensor], b_mask: torch.Tensor,
                    row_adapters: list[str] | None, config: PPOConfig,
                    step_stats: dict[int, dict[str, list[torch.Tensor]]]) -> set[int]:
    """One optimiser step of every member, on its rows ``member_rows`` (batch indices), in one
    forward and backward; return the members this minibatch measured past
    ``config.target_kl``, which do not step (their iteration's steps end there: PPO's early
    stop, as in Stable-Baselines3, by member)."""
    mb_rows = torch.cat(member_rows)
    adapters = None if row_adapters is None else [row_adapters[i] for i in mb_rows.tolist()]
    logits, hidden = forward_response(policy, rollout, mb_rows, adapters)
    mb_logits = logits.float() / config.temperature  # (b, R, V), the sampling distribution
    mb_logprobs = response_logprobs(mb_logits, rollout.response_ids[mb_rows], 1.0)
    losses, stepping, stopped, offset = [], [], set(), 0
    for (index, part), rows in zip(scored, member_rows, strict=True):
        mine = slice(offset, offset + len(rows))  # this member's rows of the minibatch
        offset = mine.stop
        local = rows - part.rows.start  # ... and of its own tensors
        mask = b_mask[rows]
        logprobs = mb_logprobs[mine]
        pg_loss, clip_fraction = clipped_policy_loss(
            logprobs, part.logprobs[local], part.advantages[local], mask, config.clip_range)
        values = part.member.value_head(hidden[mine])  # (b, R)
        vf_loss, value_clip_fraction = clipped_value_loss(
            values, part.values[local], part.returns[local], mask, config.clip_range_value)
        entropy = masked_mean(entropy_from_logits(mb_logits[mine]), mask)
        with torch.no_grad():
            log_ratio = logprobs - part.logprobs[local]
            approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)  # k3
            stats = step_stats[index]
            stats["approx_kl"].append(approx_kl)
        if config.target_kl is not None and approx_kl.item() > config.target_kl:
            stopped.add(index)
            continue
        loss = pg_loss + config.vf_coef * vf_loss - config.ent_coef * entropy
        if config.kl_loss_coef:
            per_position = exact_kl(F.log_softmax(mb_logits[mine], dim=-1),
                                    part.ref_log_probs[local])  # (b, R)
            if part.member.kl_loss_weights is not None:
                per_position = per_position * torch.tensor(
                    part.member.kl_loss_weights, device=mask.device)[local].unsqueeze(1)
            kl_loss = masked_mean(per_position, mask)
            loss = loss + config.kl_loss_coef * kl_loss
        losses.append(loss)
        stepping.append(part)
        stats["pg"].append(pg_loss.detach())
        stats["vf"].append(vf_loss.detach())
        stats["entropy"].append(entropy.detach())
        stats["clip"].append(clip_fraction)
        stats["vclip"].append(value_clip_fraction)
    if not losses:
        return stopped
    for part in stepping:
        part.member.optimizer.zero_grad(set_to_none=True)
    # No row reaches another member's weights: each gets the gradient of its own loss.
    torch.stack(losses).sum().backward()
    for part in stepping:
        optimizer = part.member.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
    return stopped


def _stats(part: _Scored, steps: dict[str, list[torch.Tensor]], rollout: Rollout,
           b_mask: torch.Tensor, seconds: float) -> PPOStats:
    mask = b_mask[part.rows]
    batch_size = mask.shape[0]
    response_kl = part.kl.sum(dim=1)  # (b,)
    mean_kl = response_kl.mean().item()
    part.member.kl_controller.update(mean_kl, batch_size)
    means = {key: torch.stack(values).mean().item() for key, values in steps.items()}
    response_tokens = int(mask.sum().item())
    return PPOStats(
        score=part.scores.mean().item(),
        reward=part.rewards.sum(dim=1).mean().item(),
        kl=mean_kl,
        kl_exact=part.kl_exact.sum(dim=1).mean().item(),
        kl_max=part.kl_exact.sum(dim=1).max().item(),
        kl_coef=part.kl_coef,
        next_kl_coef=part.member.kl_controller.value,
        policy_loss=means["pg"],
        value_loss=means["vf"],
        entropy=means["entropy"],
        clip_fraction=means["clip"],
        value_clip_fraction=means["vclip"],
        approx_kl=means["approx_kl"],
        steps=len(steps["pg"]),
        eos_fraction=rollout.ended_with_eos[part.rows].float().mean().item(),
        response_length=response_tokens / batch_size,
        tokens=int(rollout.attention_mask[part.rows].sum().item()),
        response_tokens=response_tokens,
        seconds=seconds,
    )
