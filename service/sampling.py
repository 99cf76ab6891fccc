"""Per-row sampling for a mixed batch: each row its own temperature, top-p and seed.

A row's sample must not depend on which other requests shared its batch, or a
seeded request would give different text under load. So every row draws its
uniform noise from its own ``torch.Generator`` and samples with the Gumbel-max
trick: argmax(logits / T + Gumbel) is a draw from softmax(logits / T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowSampling:
    temperature: float  # 0: greedy
    top_p: float  # 1: no nucleus truncation
    generator: torch.Generator  # this row's noise, seeded per request and choice


def row_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)


def top_p_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every token outside each row's nucleus (smallest set with mass >= p).

    ``logits`` (B, V) already temperature-scaled; ``top_p`` (B,). The most likely
    token is always kept.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p.unsqueeze(-1)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, rows: list[RowSampling]) -> torch.Tensor:
    """Next token (B,) for each row of ``logits`` (B, V)."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    temperature = torch.tensor([r.temperature for r in rows], device=logits.device)
    if bool((temperature == 0).all()):
        return greedy
    top_p = torch.tensor([r.top_p for r in rows], device=logits.device)
    scaled = logits / temperature.clamp(min=1e-6).unsqueeze(-1)
    if bool((top_p < 1).any()):
        scaled = top_p_mask(scaled, top_p)
    vocab = logits.shape[-1]
    uniform = torch.stack([torch.rand(vocab, generator=r.generator) for r in rows])
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20)))  # (B, V)
    sampled = (scaled + gumbel.to(scaled.device)).argmax(dim=-1)
    return torch.where(temperature == 0, greedy, sampled)
