"""A text tower of the reward model: standardised frozen features → a small MLP or linear map.

The reward model has two: the population tower (one output, r_pop) and the user
tower g (``rank`` outputs that each user's factors weigh).
"""

from __future__ import annotations

import torch
from torch import nn


class TextTower(nn.Module):
    """Standardise features (training mean/std), then an MLP (or a linear map) to ``out_dim``."""

    def __init__(self, feature_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(feature_dim))
        if hidden:
            self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(nn.Linear(feature_dim, out_dim))

    def set_standardisation(self, features: torch.Tensor) -> None:
        # Base-model hidden states have arbitrary per-dimension scales; without this
        # one weight decay cannot suit every encoder.
        if features.shape[0] > 1:
            self.mean.copy_(features.mean(0))
            self.scale.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.scale)  # (N, out_dim)

    def weight_penalty(self) -> torch.Tensor:
        """Sum of squared weights (not biases) of the linear layers: the weight decay term."""
        return sum(layer.weight.pow(2).sum() for layer in self.net if isinstance(layer, nn.Linear))
