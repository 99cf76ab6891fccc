"""The PPO critic: a linear value head on the policy's last hidden states.

It reads the hidden states of the policy itself (base + the user's LoRA), so the
critic costs one matrix-vector product per token instead of a second network.
It starts at zero: the first advantages are then the plain returns, and while the
head is still zero its value loss sends no gradient into the shared LoRA trunk.
It stays in float32 whatever the model's dtype: values and returns are summed
over tokens, where bf16 rounding would show.
"""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """V(s_t) for every position: (B, T, H) hidden states -> (B, T) float32 values."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.float()).squeeze(-1)  # (B, T)

    @classmethod
    def for_model(cls, model: nn.Module) -> ValueHead:
        """A zero head sized for ``model`` (HF config ``hidden_size``), on the model's device."""
        device = next(model.parameters()).device
        return cls(model.config.hidden_size).to(device=device, dtype=torch.float32)
