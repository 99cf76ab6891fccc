"""The model's built-in guards: how likely an answer breaks a shared criterion.

A guard is a logistic head on the frozen base-model features, trained when the base
model is built (``tailor model build`` writes one file per criterion beside the
weights, from labelled answers of the synthetic corpus: simulation/guard_build.py).
It is the prior the shared head of its criterion starts from where the model ships
one (``learners.shared_judge``); everyone's judgments then correct it. A criterion
without a guard file starts from the written principles alone.

Why built-in guards and not only the principles: a prior fitted on a few written
answers to requests for harm or myths has never seen an everyday answer, and judges
those by accident. On a corpus-v3 build the principles' honesty prior (with the
runs' judgments) called 6% of everyday concise answers false, which at the shared
heads' strength was a tax on the concise style no user voted for; the honesty guard,
fitted on 2,800 corpus answers, calls none of them false.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)
# One file per criterion; "harmless" keeps the name it shipped with.
GUARD_FILES = {"harmless": "guard_head.safetensors", "honest": "honesty_guard_head.safetensors"}
# labelled corpus answers a guard is fitted on (simulation/guard_build.py: twice as
# many on corpus 3); what a file without the count in its metadata (the shipped v2) says
GUARD_ANSWERS = 1400


@dataclass
class Guard:
    weight: torch.Tensor  # (D,)
    bias: torch.Tensor  # ()
    answers: int = GUARD_ANSWERS  # labelled answers it was fitted on

    @classmethod
    def load(cls, model_dir: Path, criterion: str = "harmless") -> Guard | None:
        path = Path(model_dir) / GUARD_FILES[criterion]
        if not path.is_file():  # e.g. no honesty guard on a v2 build: nothing to warn of
            log.info("no %s in %s: the %s head starts from the written principles alone",
                     path.name, model_dir, criterion)
            return None
        with safe_open(path, "pt") as opened:  # one read: the tensors and the metadata
            answers = int((opened.metadata() or {}).get("answers", GUARD_ANSWERS))
            weight, bias = opened.get_tensor("weight"), opened.get_tensor("bias")
        return cls(weight.float(), bias.float(), answers)

    def probability(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) probability that each answer (features (N, D)) breaks the criterion."""
        return torch.sigmoid(features.float() @ self.weight + self.bias)

    def save(self, model_dir: Path, criterion: str = "harmless") -> Path:
        path = Path(model_dir) / GUARD_FILES[criterion]
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.reshape(())}, path,
                  metadata={"answers": str(self.answers)})
        return path


def load_guards(model_dir: Path) -> dict[str, Guard]:
    """The model's guards, per criterion that has one."""
    found = {criterion: Guard.load(model_dir, criterion) for criterion in GUARD_FILES}
    return {criterion: guard for criterion, guard in found.items() if guard is not None}


def fit_guard(features: torch.Tensor, breaking: torch.Tensor, steps: int = 500,
              l2: float = 1e-3) -> Guard:
    """Logistic regression of ``breaking`` (N,) on ``features`` (N, D), standardised inside."""
    features = features.float()
    mean, std = features.mean(0), features.std(0).clamp(min=1e-4)
    x = (features - mean) / std
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")
    target = breaking.float()

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
        return Guard(folded.detach(), (bias - (folded * mean).sum()).detach(), len(features))
