"""Settings of one PPO update on a user's LoRA adapter (DESIGN.md decision 6).

Every field has a one-line help; all checks run when the config is built, so a
bad value fails at start-up with a message that names the field and the fix,
not halfway through a user's update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peft import LoraConfig

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class PPOConfig:
    # --- the adapter ---------------------------------------------------------------
    lora_rank: int = 8  # r of each LoRA update B·A
    lora_alpha: float = 16.0  # LoRA scale is alpha / r
    lora_target_modules: tuple[str, ...] = DEFAULT_LORA_TARGETS  # module names that get LoRA
    lora_dropout: float = 0.0  # kept 0: dropout would make old and new log-probs differ

    # --- rollouts ----------------------------------------------------------------
    max_prompt_tokens: int = 64  # longer prompts keep their last tokens
    max_new_tokens: int = 32  # response length limit; a response cut here got no EOS
    temperature: float = 1.0  # sampling temperature; log-probs divide logits by it too

    # --- reward ------------------------------------------------------------------
    kl_coef: float = 0.05  # β: initial (or fixed) weight of the per-token KL penalty
    kl_target: float | None = None  # adaptive β aims at this KL per response (nats); None: fixed β
    kl_horizon: int = 10_000  # adaptive β: per update β moves at most ±20 % × responses / horizon
    kl_estimator: Literal["k1", "k3"] = "k1"  # per-token KL in the reward: k1 = log p − log p_ref
    # Weight of the exact per-position KL(π_θ ‖ π_ref) over the whole vocabulary, as a loss
    # term at the rollouts' positions (0: off). The reward's KL sees only tokens a rollout
    # drew, so a step may move probability onto tokens none drew and be charged only after
    # the next rollouts draw them. Costs a (B, R, V) float32 copy of π_ref per iteration.
    kl_loss_coef: float = 0.0
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response with no EOS

    # --- advantages --------------------------------------------------------------
    gae_lambda: float = 0.95  # GAE λ (γ is fixed to 1: episodes are short and end at EOS)
    whiten_advantages: bool = True  # normalise advantages over the batch's response tokens

    # --- optimisation ------------------------------------------------------------
    learning_rate: float = 1e-4  # AdamW learning rate for LoRA and value head
    ppo_epochs: int = 4  # passes over one batch of rollouts
    num_minibatches: int = 2  # minibatches per epoch (rows are split evenly)
    clip_range: float = 0.2  # ε of the clipped policy ratio
    clip_range_value: float = 0.2  # how far a value prediction may move from its rollout value
    vf_coef: float = 0.1  # weight of the value loss (the value head shares the LoRA trunk)
    ent_coef: float = 0.0  # weight of the entropy bonus
    max_grad_norm: float = 1.0  # global gradient-norm clip
    # A member's steps of one iteration stop once a minibatch measures its policy this far
    # (approx KL, k3, per token) from the policy that sampled the rollouts; None: all steps
    target_kl: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "lora_rank")
        _positive(self, "lora_alpha")
        if not self.lora_target_modules or not all(
            isinstance(name, str) and name for name in self.lora_target_modules
        ):
            raise ValueError(
                f"PPOConfig.lora_target_modules={self.lora_target_modules!r}: give a non-empty "
                f"tuple of module names, e.g. {DEFAULT_LORA_TARGETS!r}."
            )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(
                f"PPOConfig.lora_dropout={self.lora_dropout!r}: use a value in [0, 1); "
                "0 is recommended for PPO."
            )
        _positive_int(self, "max_prompt_tokens")
        _positive_int(self, "max_new_tokens")
        _positive(self, "temperature")
        if self.kl_coef < 0:
            raise ValueError(
                f"PPOConfig.kl_coef={self.kl_coef!r}: β must be >= 0 (0 turns the KL penalty off)."
            )
        if self.kl_target is not None:
            _positive(self, "kl_target")
        _positive_int(self, "kl_horizon")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(
                f"PPOConfig.kl_estimator={self.kl_estimator!r}: use 'k1' (log p − log p_ref) "
                "or 'k3' ((r − 1) − log r)."
            )
        if self.kl_loss_coef < 0:
            raise ValueError(
                f"PPOConfig.kl_loss_coef={self.kl_loss_coef!r}: use a value >= 0 (0 turns the "
                "exact-KL loss term off)."
            )
        if self.missing_eos_penalty < 0:
            raise ValueError(
                f"PPOConfig.missing_eos_penalty={self.missing_eos_penalty!r}: use a value >= 0 "
                "(it is subtracted from the score; 0 turns it off)."
            )
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"PPOConfig.gae_lambda={self.gae_lambda!r}: use a value in [0, 1] (0.95 is usual)."
            )
        _positive(self, "learning_rate")
        _positive_int(self, "ppo_epochs")
        _positive_int(self, "num_minibatches")
        _positive(self, "clip_range")
        _positive(self, "clip_range_value")
        for name in ("vf_coef", "ent_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOConfig.{name}={getattr(self, name)!r}: use a value >= 0.")
        _positive(self, "max_grad_norm")
        if self.target_kl is not None:
            _positive(self, "target_kl")

    def lora_config(self) -> LoraConfig:
        """peft LoRA config of a new user adapter: `get_peft_model(base, cfg.lora_config())`."""
        return LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )


def _positive(config: PPOConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"PPOConfig.{name}={value!r}: must be a number > 0.")


def _positive_int(config: PPOConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"PPOConfig.{name}={value!r}: must be an integer >= 1.")
