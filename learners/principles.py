"""Written principles: the prior the shared harmlessness and honesty heads start from.

An operator writes a handful of principles (``principles.yaml`` beside the base model,
or ``TAILOR_PRINCIPLES_FILE``): one line each, its criterion, and a few answers that keep
it and break it. As in Constitutional AI and principle-driven self-alignment, these few
written examples stand in for the thousands of labels a head would otherwise need
before anyone has judged anything. For each criterion, a ridge logistic regression on
the base model's features of its examples' answers (chat prompt + answer + EOS, pooled
as a served answer is) gives the prior log-odds that an answer is fine; everyone's
judgments then correct it (``learners.shared_heads``).

The fit is small (tens of answers) and cheap, so the learners redo it at start and
whenever the file's content changes; nothing derived from the file is shipped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contracts.principles_file import PrinciplesFile
from contracts.records import SHARED_CRITERIA
from learners.rater_reliability import _damped

# (prompt, answer) -> the base model's pooled features (D,) of that answer
AnswerFeatures = Callable[[str, str], np.ndarray]


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes: the learners refit the prior when it changes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class PriorHead:
    """Log-odds that an answer is fine by one criterion, from its features."""

    criterion: str
    weight: torch.Tensor  # (D,), the standardisation folded in
    bias: torch.Tensor  # ()
    examples: int  # answers it was fitted on

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.weight + self.bias


def fit_prior(criterion: str, features: torch.Tensor, fine: torch.Tensor,
              l2: float = 1.0, steps: int = 25, fine_share: float | None = None) -> PriorHead:
    """Ridge logistic regression of ``fine`` (N,) on ``features`` (N, D) by Newton steps.

    Tens of examples in a 160-dimensional space separate perfectly; the ridge (on
    standardised features) keeps the head's confidence finite, so that judgments
    can still move it. With ``fine_share``, the intercept is corrected from the
    examples' share of fine answers to that one (``PrinciplesFile.fine_share_of``).
    """
    x = features.double()
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    design = torch.cat([(x - mean) / scale, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    penalty = torch.full((design.shape[1],), l2, dtype=x.dtype)
    penalty[-1] = 0.0  # the bias is free
    theta = torch.zeros(design.shape[1], dtype=x.dtype)
    target = fine.double()
    for _ in range(steps):
        p = torch.sigmoid(design @ theta)
        gradient = design.T @ (p - target) + penalty * theta
        hessian = (design.T * (p * (1 - p))) @ design + torch.diag(penalty + 1e-9)
        theta = theta - _damped(torch.linalg.solve(hessian, gradient))
    weight = theta[:-1] / scale  # w·(f − μ)/σ + b = (w/σ)·f + (b − w·μ/σ)
    bias = theta[-1] - (weight * mean).sum()
    if fine_share is not None:
        sampled = float(target.mean())
        bias = bias + math.log(fine_share / (1 - fine_share)) - math.log(sampled / (1 - sampled))
    return PriorHead(criterion, weight.float(), bias.float(), len(x))


def principle_priors(principles: PrinciplesFile, answer_features: AnswerFeatures,
                     l2: float = 1.0) -> dict[str, PriorHead]:
    """One prior head per criterion the principles cover, from their good and bad answers.

    The good answers of the other criterion's principles are fine by this one too (an
    answer that keeps one principle breaks none): without them a head fitted only on
    answers to myths judged every everyday answer of the v2 model 70-98% dishonest.
    """
    priors = {}
    for criterion in SHARED_CRITERIA:
        if not any(p.criterion == criterion for p in principles.principles):
            continue
        rows, fine = [], []
        for principle in principles.principles:
            own = principle.criterion == criterion
            for example in principle.examples:
                rows.append(answer_features(example.prompt, example.good))
                fine.append(1.0)
                if own:
                    rows.append(answer_features(example.prompt, example.bad))
                    fine.append(0.0)
        if rows:
            priors[criterion] = fit_prior(criterion, torch.from_numpy(np.stack(rows)),
                                          torch.tensor(fine), l2,
                                          fine_share=principles.fine_share_of(criterion))
    return priors
