"""The reward model's two losses, on reward logits r (sums, so a caller sets the scale).

- thumbs: binary cross-entropy of σ(r) against the 0/1 label;
- ranking pairs: Bradley–Terry, P(better ≻ worse) = σ(r_better − r_worse), so the
  loss is −log σ(r_better − r_worse) = softplus(r_worse − r_better).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def thumb_loss(scores: torch.Tensor, labels: torch.Tensor,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the binary cross-entropies of ``scores`` (logits) against 0/1 ``labels``."""
    losses = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    return (losses if weights is None else losses * weights).sum()


def pair_loss(better_scores: torch.Tensor, worse_scores: torch.Tensor,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the Bradley–Terry losses −log σ(r_better − r_worse)."""
    losses = F.softplus(worse_scores - better_scores)
    return (losses if weights is None else losses * weights).sum()
