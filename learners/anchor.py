"""The KL anchor of a user's PPO when users start from the safety start.

PPO's reference is the base model (`disable_adapter()`), which is right when a
user's adapter starts from the base model. When it starts from the safety start
(learners.safety_start), a per-token KL to the base model pulls every user back
toward the base model's misbehaviours — its harmful compliance and falsehoods are
part of what the start moved away from — and charges each user for the start's
own distance before their taste moves anything. So the KL is measured against
the start instead: the policy the user's personalization begins from, as
InstructGPT's reference is the SFT model its RL began from. The reward model's
features stay the base model's (served completions record those). The start
sits in a frozen adapter of its own (``anchor``), and the reference pass runs
every row through it, whichever user's adapter the row trains.
"""

from __future__ import annotations

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

# A LoRA state as peft saves it: names without the adapter's (get_peft_model_state_dict)
LoraState = dict[str, torch.Tensor]
ANCHOR_ADAPTER = "anchor"


def lora_state(policy: PeftModel, adapter: str) -> LoraState:
    """A host-memory copy of ``adapter``'s LoRA weights, named as peft saves them."""
    return {name: tensor.detach().to("cpu", copy=True)
            for name, tensor in get_peft_model_state_dict(policy, adapter_name=adapter).items()}


def load_lora(policy: PeftModel, adapter: str, state: LoraState) -> None:
    """Copy ``state`` into ``adapter``'s weights, in place (optimisers keep their parameters);
    a state with weights the adapter lacks (saved from another LoRA config) is refused."""
    own = get_peft_model_state_dict(policy, adapter_name=adapter)
    missing = set(state) - set(own)
    if missing:
        raise ValueError(f"the LoRA state names {len(missing)} weights the policy lacks, e.g. "
                         f"{sorted(missing)[0]}: was it saved from another LoRA config?")
    set_peft_model_state_dict(policy, state, adapter_name=adapter)


def load_anchor(policy: PeftModel, state: LoraState) -> str:
    """Put ``state`` in the frozen adapter that PPO's reference runs through (created the
    first time, with the active adapter's config). Returns its name. (Which adapters
    train is set where they train: `learners.ppo.ppo_step`.)"""
    if ANCHOR_ADAPTER not in policy.peft_config:
        policy.add_adapter(ANCHOR_ADAPTER, policy.peft_config[policy.active_adapter])
    load_lora(policy, ANCHOR_ADAPTER, state)
    policy.base_model.set_requires_grad([ANCHOR_ADAPTER], False)
    return ANCHOR_ADAPTER
