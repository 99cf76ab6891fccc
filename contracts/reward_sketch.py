"""A user's reward as the learners know it, with its uncertainty: what serving needs to
choose which answers a user is asked to compare.

The reward model (learners.reward_model) with linear towers scores base-model
features ``x`` (D,) of an answer as

    r(x) = offset · x + offset_bias + θ · (projection x + projection_bias)

where θ = (bias, factors) is the user's head. With the towers frozen the head is a
penalised logistic regression, so its posterior is close to the Gaussian
N(mean, covariance) around the fitted head (Laplace: the inverse Hessian of the
penalised loss). A learner writes one per user after every refit of the user's
reward (`reward_sketch_key`); serving draws heads from it (Thompson sampling,
service.comparison) and never needs the learners' code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load, save

FIELDS = ("offset", "offset_bias", "projection", "projection_bias", "mean", "covariance")


@dataclass(frozen=True)
class RewardSketch:
    offset: np.ndarray  # (D,) the population reward's weights on raw features
    offset_bias: np.ndarray  # (1,)
    projection: np.ndarray  # (H, D) what the head θ multiplies: [1, r_pop(x), g(x)] as maps
    projection_bias: np.ndarray  # (H,)
    mean: np.ndarray  # (H,) the fitted head
    covariance: np.ndarray  # (H, H) its Laplace posterior covariance

    def __post_init__(self) -> None:
        heads, dim = self.projection.shape
        shapes = {"offset": (dim,), "offset_bias": (1,), "projection_bias": (heads,),
                  "mean": (heads,), "covariance": (heads, heads)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"RewardSketch.{name} has shape {getattr(self, name).shape}, "
                                 f"expected {shape}")

    @property
    def feature_dim(self) -> int:
        return int(self.projection.shape[1])

    def scores(self, features: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """(S, N) rewards of features (N, D) under each of ``heads`` (S, H)."""
        features = features.astype(np.float64)
        base = features @ self.offset.astype(np.float64) + float(self.offset_bias[0])  # (N,)
        phi = features @ self.projection.T.astype(np.float64) + self.projection_bias  # (N, H)
        return base[None, :] + heads @ phi.T

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, H) heads drawn from the posterior."""
        # eigh, not cholesky: a covariance from a near-singular Hessian may have
        # round-off negative eigenvalues; clipping them keeps every draw finite
        values, vectors = np.linalg.eigh(self.covariance.astype(np.float64))
        root = vectors * np.sqrt(np.clip(values, 0.0, None))
        return self.mean.astype(np.float64) + rng.standard_normal((count, len(values))) @ root.T

    def to_bytes(self) -> bytes:
        return save({name: np.ascontiguousarray(getattr(self, name), dtype=np.float32)
                     for name in FIELDS})

    @classmethod
    def from_bytes(cls, blob: bytes) -> RewardSketch:
        tensors = load(blob)
        missing = [name for name in FIELDS if name not in tensors]
        if missing:
            raise ValueError(f"reward sketch lacks {missing}")
        return cls(**{name: tensors[name] for name in FIELDS})
