"""The KL anchor of a user's PPO when users start from the safety start.

PPO's reference is the base model (`disable_adapter()`), which is right when a
user's adapter starts from the base model. When it starts from the safety start
(learners.safety_start), a per-token KL to the base model pulls every user back
toward the base model's misbehaviours — its harmful compliance and falsehoods are
part of what the start moved away from — and charges each user for the start's
own distance before their taste moves anything. So the KL is measured against
the start instead: the policy the user's personalization begins from, as
InstructGPT's reference is the SFT model its RL began from. The reward model's
features stay the base model's (served completions record those).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

LoraState = dict[str, torch.Tensor]


@contextmanager
def lora_swapped(policy: nn.Module, state: LoraState) -> Iterator[None]:
    """``policy`` with the LoRA weights of ``state`` in place of its own, restored after.
    In-place copies: the optimiser keeps the same parameter objects."""
    own = {k: v.detach().clone() for k, v in policy.state_dict().items() if k in state}
    missing = set(state) - set(own)
    if missing:
        raise ValueError(f"anchor names {len(missing)} weights the policy lacks, e.g. "
                         f"{sorted(missing)[0]}: was it saved from another LoRA config?")
    policy.load_state_dict(state, strict=False)
    try:
        yield
    finally:
        policy.load_state_dict(own, strict=False)
