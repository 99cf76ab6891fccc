"""Solving every user's head at once, towers frozen: batched Newton on penalised logistic losses.

With the towers frozen, each event is ``offset + θ_u · phi`` for its user's head
θ_u = (b_u, factors_u): a thumb is a logistic regression on phi = [1, proj(x)], a
ranking pair one on phi = [0, proj(better) − proj(worse)] with label 1. With the
L2 shrinkage (``bias_l2``, ``user_l2``) each user's problem is convex and has
1 + k' parameters (k' factors), so Newton's method solves it in a few steps:
milliseconds for hundreds of events, which is what lets a learner refit a
newcomer's head on every update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadDesign:
    """Each event as ``offset + θ_u · phi`` with θ_u = (b_u, factors_u)."""

    user: torch.Tensor  # (E,) user index
    offset: torch.Tensor  # (E,) population logit (thumbs) or logit difference (pairs)
    phi: torch.Tensor  # (E, 1 + k'): [1, proj(x)] for thumbs, [0, proj(a) − proj(b)] for pairs
    label: torch.Tensor  # (E,) 0/1 (pairs: 1)
    weight: torch.Tensor  # (E,)


def solve_user_heads(design: HeadDesign, num_users: int, num_factors: int, bias_l2: float,
                     user_l2: float, steps: int) -> torch.Tensor:
    """(U, 1+k) L2-penalised logistic-regression solutions of every user at once (Newton).

    Minimises, per user, Σ weight·BCE(σ(offset + θ·phi), label) + ½·bias_l2·b² +
    ½·user_l2·|factors|². The Hessians are accumulated per user with ``index_add_``
    and solved as one batched system.
    """
    width = 1 + num_factors
    penalty = _penalty(width, bias_l2, user_l2)
    theta = torch.zeros(num_users, width)
    phi, weight = design.phi.double(), design.weight.double()
    outer = phi[:, :, None] * phi[:, None, :]  # (E, 1+k, 1+k)
    for _ in range(steps):
        logits = design.offset.double() + (phi * theta.double()[design.user]).sum(-1)
        prob = torch.sigmoid(logits)
        grad = torch.zeros(num_users, width, dtype=torch.float64).index_add_(
            0, design.user, (weight * (prob - design.label.double()))[:, None] * phi)
        grad = grad + theta.double() @ penalty
        hess = _hessians(design, prob, outer, num_users) + penalty
        step = torch.linalg.solve(hess, grad[..., None])[..., 0]
        # Clipped Newton: with a near-zero penalty and separable votes a full step
        # can overshoot far into the flat part of the sigmoid.
        theta = theta - step.clamp(-4.0, 4.0).float()
        if step.numel() == 0 or float(step.abs().max()) < 1e-6:
            break
    return theta


def head_precisions(design: HeadDesign, theta: torch.Tensor, bias_l2: float,
                    user_l2: float) -> torch.Tensor:
    """(U, 1+k, 1+k) each user's Hessian of the penalised loss at ``theta`` (U, 1+k): the
    precision of the Laplace posterior over their head (contracts.reward_sketch)."""
    num_users, width = theta.shape
    phi = design.phi.double()
    prob = torch.sigmoid(design.offset.double() + (phi * theta.double()[design.user]).sum(-1))
    outer = phi[:, :, None] * phi[:, None, :]
    return _hessians(design, prob, outer, num_users) + _penalty(width, bias_l2, user_l2)


def _penalty(width: int, bias_l2: float, user_l2: float) -> torch.Tensor:
    # A tiny ridge keeps users with no events (or no thumbs: the bias is then
    # unidentified) solvable when a penalty is 0.
    return (torch.diag(torch.tensor([bias_l2] + [user_l2] * (width - 1), dtype=torch.float64))
            + 1e-6 * torch.eye(width, dtype=torch.float64))


def _hessians(design: HeadDesign, prob: torch.Tensor, outer: torch.Tensor,
              num_users: int) -> torch.Tensor:
    """(U, W, W) Σ weight·p(1−p)·phi phiᵀ per user: the data part of each Hessian."""
    width = outer.shape[1]
    return torch.zeros(num_users, width, width, dtype=torch.float64).index_add_(
        0, design.user, (design.weight.double() * prob * (1 - prob))[:, None, None] * outer)
