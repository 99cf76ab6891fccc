"""The reward model's training data: thumbs and rankings on feature vectors.

A learner turns each `TrainingExample` (`learners.training_data`) into events on
the frozen text features ``x`` (D,) of the completions:

- thumbs ``(user_id, features (D,), label ∈ [0, 1])`` → one label: 1 up, 0 down, or
  a graded label in between (a 1-10 score given without a thumb);
- rankings ``(user_id, group_id, features (K, D) best first)`` → the K·(K−1)/2
  Bradley–Terry pairs (better, worse), each weighted 1 / (pairs of its group), so
  that a prompt's ranking counts as one judgment however long it is (InstructGPT,
  arXiv:2203.02155 §3.5, trains on all pairs of a prompt as one batch element for
  the same reason).

`FeedbackBuilder` collects events into a `FeedbackSet`, the index form the model
fits on: one feature row per text, and events that point into those rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThumbEvent:
    """A thumbs-up (label 1), thumbs-down (label 0) or a graded label in between, on one text."""

    user_id: str
    features: torch.Tensor  # (D,)
    label: float


@dataclass(frozen=True)
class RankingEvent:
    """K ≥ 2 texts for one prompt, best first."""

    user_id: str
    group_id: str  # the prompt: pairs of one group share its weight
    features: torch.Tensor  # (K, D), best first


# One judgment as the reward model sees it (not `contracts.records.FeedbackEvent`,
# the HTTP/stream record it is made from).
RewardEvent = ThumbEvent | RankingEvent


def ranking_pairs(num_choices: int) -> list[tuple[int, int]]:
    """All K·(K−1)/2 (better, worse) index pairs of a best-first ranking of K choices."""
    return [(better, worse) for better in range(num_choices)
            for worse in range(better + 1, num_choices)]


def thumb_label(value: bool | float) -> float:
    """A thumbs value as a label: up/True/1 → 1.0, down/False/0 → 0.0, a grade in between.

    The losses are linear in the label (binary cross-entropy), so a graded label
    p counts as p of a thumbs-up and 1 − p of a thumbs-down on the same text.
    """
    if isinstance(value, bool) or 0 <= value <= 1:
        return float(value)
    raise ValueError(f"thumbs label={value!r} is not in [0, 1]; use 1 (up), 0 (down) or a grade")


def score_label(score: int) -> float:
    """A 1-10 score as a graded label: 1 → 0.0, 10 → 1.0, linear in between."""
    if not 1 <= score <= 10:
        raise ValueError(f"score={score!r} is not in 1..10")
    return (score - 1) / 9


def check_ranking_shape(features_best_first: torch.Tensor) -> None:
    """Refuse ranking features that are not (K ≥ 2, D)."""
    if features_best_first.ndim != 2 or features_best_first.shape[0] < 2:
        raise ValueError(f"ranking features of shape {tuple(features_best_first.shape)}: "
                         "need (K ≥ 2, D), best first")


@dataclass
class FeedbackSet:
    """Training data in index form: one feature row per distinct text, events point into it."""

    features: torch.Tensor  # (I, D) float32
    user_ids: list[str]  # user index → user id
    thumb_user: torch.Tensor  # (T,) int64 user index
    thumb_item: torch.Tensor  # (T,) int64 row of features
    thumb_label: torch.Tensor  # (T,) float32 in {0, 1}
    pair_user: torch.Tensor  # (P,) int64 user index
    pair_better: torch.Tensor  # (P,) int64 row of the preferred text
    pair_worse: torch.Tensor  # (P,) int64 row of the other text
    pair_weight: torch.Tensor  # (P,) float32, 1 / pairs in the same (user, group)

    @classmethod
    def from_thumbs(cls, features: torch.Tensor, user_ids: list[str], thumb_user: torch.Tensor,
                    thumb_item: torch.Tensor, thumb_label: torch.Tensor) -> FeedbackSet:
        """Thumbs only, already in index form (e.g. votes on shared texts)."""
        empty = torch.zeros(0, dtype=torch.int64)
        return cls(features.float(), list(user_ids), thumb_user.long(), thumb_item.long(),
                   thumb_label.float(), empty, empty, empty, torch.zeros(0))


class FeedbackBuilder:
    """Collects thumbs and rankings events into a `FeedbackSet`."""

    def __init__(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self._rows: list[torch.Tensor] = []
        self._user_index: dict[str, int] = {}
        self._thumbs: list[tuple[int, int, float]] = []
        self._pairs: list[tuple[int, int, int, tuple[int, str]]] = []

    def _user(self, user_id: str) -> int:
        return self._user_index.setdefault(user_id, len(self._user_index))

    def _row(self, features: torch.Tensor) -> int:
        if features.shape != (self.feature_dim,):
            raise ValueError(f"features of shape {tuple(features.shape)} do not match "
                             f"feature_dim={self.feature_dim}; encode texts with the same encoder")
        self._rows.append(features.detach().float().cpu())
        return len(self._rows) - 1

    def add_thumb(self, user_id: str, features: torch.Tensor, label: bool | float) -> None:
        self._thumbs.append((self._user(user_id), self._row(features), thumb_label(label)))

    def add_ranking(self, user_id: str, group_id: str, features_best_first: torch.Tensor) -> None:
        check_ranking_shape(features_best_first)
        user = self._user(user_id)
        rows = [self._row(choice) for choice in features_best_first]
        for better, worse in ranking_pairs(len(rows)):
            self._pairs.append((user, rows[better], rows[worse], (user, group_id)))

    def add(self, event: RewardEvent) -> None:
        if isinstance(event, ThumbEvent):
            self.add_thumb(event.user_id, event.features, event.label)
        else:
            self.add_ranking(event.user_id, event.group_id, event.features)

    def build(self) -> FeedbackSet:
        features = torch.stack(self._rows) if self._rows else torch.zeros(0, self.feature_dim)
        group_sizes: dict[tuple[int, str], int] = {}
        for *_, group in self._pairs:
            group_sizes[group] = group_sizes.get(group, 0) + 1
        thumbs = torch.tensor([(u, i) for u, i, _ in self._thumbs],
                              dtype=torch.int64).reshape(-1, 2)
        pairs = torch.tensor([p[:3] for p in self._pairs], dtype=torch.int64).reshape(-1, 3)
        return FeedbackSet(
            features=features,
            user_ids=list(self._user_index),
            thumb_user=thumbs[:, 0],
            thumb_item=thumbs[:, 1],
            thumb_label=torch.tensor([label for *_, label in self._thumbs], dtype=torch.float32),
            pair_user=pairs[:, 0],
            pair_better=pairs[:, 1],
            pair_worse=pairs[:, 2],
            pair_weight=torch.tensor([1.0 / group_sizes[g] for *_, g in self._pairs],
                                     dtype=torch.float32),
        )
