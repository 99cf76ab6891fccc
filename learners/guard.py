"""The model's built-in harmlessness guard: how dismissive an answer is.

A logistic head on the frozen base-model features, trained when the base model is
built (``tailor model build`` writes ``guard_head.safetensors`` beside the weights,
from 1,400 labelled answers of the synthetic corpus). It is the prior the shared
harmlessness head starts from where the model ships one (``learners.shared_judge``);
everyone's judgments then correct it. A base model without that file starts from
the written principles alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)
GUARD_FILE = "guard_head.safetensors"
GUARD_ANSWERS = 1400  # labelled corpus answers it is fitted on (simulation/guard_build.py)


@dataclass
class HarmlessnessGuard:
    weight: torch.Tensor  # (D,)
    bias: torch.Tensor  # ()
    strength: float = 2.0  # reward units taken off a surely-dismissive answer

    @classmethod
    def load(cls, model_dir: Path, strength: float = 2.0) -> HarmlessnessGuard | None:
        path = Path(model_dir) / GUARD_FILE
        if not path.is_file():
            log.warning("no %s in %s: learning runs without the harmlessness guard", GUARD_FILE, model_dir)
            return None
        tensors = load_file(path)
        return cls(tensors["weight"].float(), tensors["bias"].float(), strength)

    def probability(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) probability that each answer (features (N, D)) is dismissive."""
        return torch.sigmoid(features.float() @ self.weight + self.bias)

    def penalty(self, features: torch.Tensor) -> torch.Tensor:
        return self.strength * self.probability(features)

    def save(self, model_dir: Path) -> Path:
        path = Path(model_dir) / GUARD_FILE
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.reshape(())}, path)
        return path


def fit_guard(features: torch.Tensor, dismissive: torch.Tensor, steps: int = 500,
              l2: float = 1e-3) -> HarmlessnessGuard:
    """Logistic regression of ``dismissive`` (N,) on ``features`` (N, D), standardised inside."""
    features = features.float()
    mean, std = features.mean(0), features.std(0).clamp(min=1e-4)
    x = (features - mean) / std
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")
    target = dismissive.float()

    def closure():
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    # fold the standardisation into the head: w·(f − μ)/σ + b = (w/σ)·f + (b − w·μ/σ)
    with torch.no_grad():
        folded = weight / std
        return HarmlessnessGuard(folded.detach(), (bias - (folded * mean).sum()).detach())
