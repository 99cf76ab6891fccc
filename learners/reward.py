"""Per-user reward models: a population head plus a small user part shrunk toward it.

DESIGN.md decision 5. Every reward is a function of frozen text features
``x`` (float32, dim D: `contracts.features` gives 2 × hidden of the base model; a
sentence encoder gives its own size, see `evaluations.encoders`):

    r_u(x) = r_pop(x)                          population head: a tower on standardised x
           + b_u + a_u · r_pop(x) + z_u · g(x)  user part: bias, own weight on the
                                                population reward ("crowd factor"), and
                                                rank-k factors on a learned text
                                                projection g (the "user tower")

The head (b_u, a_u, z_u) carries an L2 penalty (``bias_l2``, ``user_l2``) that
pulls it to zero, i.e. pulls the user's reward toward the population's; an
unknown or cold-start user has a zero head and gets the population reward
exactly. Fitting is in two stages: the population head on every event, then
the user tower jointly with every user's head (population frozen); with the
towers frozen, one user's head is a (k+2)-parameter penalised logistic
regression solved by Newton's method: milliseconds for hundreds of events.

Training data (`FeedbackBuilder` → `FeedbackSet`):

- thumbs ``(user_id, features (D,), label ∈ {0, 1})`` → binary labels,
  loss ``BCE(σ(r_u(x)), label)``;
- rankings ``(user_id, group_id, features (K, D) best first)`` → the
  K·(K−1)/2 Bradley–Terry pairs ``P(a ≻ b) = σ(r_u(a) − r_u(b))``, each weighted
  1 / (pairs of its group), so that a prompt's ranking counts as one judgment
  however long it is (InstructGPT, arXiv:2203.02155 §3.5, trains on all pairs of
  a prompt as one batch element for the same reason).

Learner-facing API::

    builder = FeedbackBuilder(feature_dim=D)
    builder.add(ThumbEvent("alice", x, 1)); builder.add(RankingEvent("bob", "p1", xs))
    model = RewardModel.fit(builder.build(), RewardConfig())   # population + every user
    model.score("alice", x_batch)                # (N,) rewards; unknown user → population
    model.event_accuracy(event)                  # before training on it: 1.0 right, 0.0 wrong
                                                 # (rankings: fraction of pairs in order)
    model.fit_user("carol", builder_of_carol.build())  # towers frozen, ≪ 1 s
    blob = model.to_bytes(); RewardModel.from_bytes(blob)        # whole model (safetensors)
    head = model.user_head_bytes("alice"); model.load_user_head("alice", head)  # one user

`OnlineAccuracy` keeps the running held-out accuracy of those predictions.
Defaults suit a few thousand events on CPU (a full fit of ~110k Polis votes
takes seconds); `evaluations.reward_eval` shows how the shrinkage is chosen on
held-out data.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

FORMAT_VERSION = "tailor-reward-1"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RewardConfig:
    rank: int = 3  # user factors per user on the user tower (0: none)
    crowd_factor: bool = True  # one more factor per user: their weight on the population reward
    # Linear towers by default: they generalise from a few hundred events to texts
    # never judged (what a learner faces); an MLP tower (e.g. 128) pays off only
    # with many judgments per text, as in the seen-texts protocol of reward_eval.
    population_hidden: int = 0  # hidden units of the population tower (0: linear head)
    user_hidden: int = 0  # hidden units of the user tower g (0: linear projection)
    population_weight_decay: float = 1e-3  # L2 on population tower weights (on the mean loss)
    user_tower_weight_decay: float = 1e-3  # L2 on user tower weights (on the mean loss)
    user_l2: float = 1.0  # shrinkage of each user's factors z_u toward 0 (on the user's summed loss)
    bias_l2: float = 1.0  # shrinkage of each user's bias b_u toward 0 (on the user's summed loss)
    steps: int = 300  # full-batch Adam steps per stage (population, then user part)
    learning_rate: float = 0.03  # Adam step size
    newton_steps: int = 15  # Newton iterations when (re)fitting user heads with towers frozen
    seed: int = 0  # initialisation of the towers

    def __post_init__(self) -> None:
        for name in ("rank", "population_hidden", "user_hidden", "steps", "newton_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name}={getattr(self, name)} must be ≥ 0")
        for name in ("population_weight_decay", "user_tower_weight_decay", "user_l2", "bias_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name}={getattr(self, name)} must be ≥ 0; "
                                 "use 0 for no penalty")
        if self.learning_rate <= 0:
            raise ValueError(f"RewardConfig.learning_rate={self.learning_rate} must be > 0; "
                             "use e.g. 0.03")


# --------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class ThumbEvent:
    """A thumbs-up (label 1) or thumbs-down (label 0) on one text."""

    user_id: str
    features: torch.Tensor  # (D,)
    label: int


@dataclass(frozen=True)
class RankingEvent:
    """K ≥ 2 texts for one prompt, best first."""

    user_id: str
    group_id: str  # the prompt: pairs of one group share its weight
    features: torch.Tensor  # (K, D), best first


FeedbackEvent = ThumbEvent | RankingEvent


def ranking_pairs(num_choices: int) -> list[tuple[int, int]]:
    """All K·(K−1)/2 (better, worse) index pairs of a best-first ranking of K choices."""
    return [(better, worse) for better in range(num_choices) for worse in range(better + 1, num_choices)]


def thumb_label(value: bool | int | float) -> float:
    """A thumbs value as a binary label: up/True/1 → 1.0, down/False/0 → 0.0."""
    if value in (1, True):
        return 1.0
    if value in (0, False):
        return 0.0
    raise ValueError(f"thumbs label={value!r} is not binary; use 1 (up) or 0 (down)")


def thumb_loss(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Weighted sum of the binary cross-entropies of ``scores`` (logits) against 0/1 ``labels``."""
    losses = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    return (losses if weights is None else losses * weights).sum()


def pair_loss(better_scores: torch.Tensor, worse_scores: torch.Tensor,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of the Bradley–Terry losses −log σ(r_better − r_worse)."""
    losses = F.softplus(worse_scores - better_scores)
    return (losses if weights is None else losses * weights).sum()


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

    @property
    def num_events(self) -> int:
        return int(self.thumb_label.shape[0] + self.pair_weight.shape[0])

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

    def add_thumb(self, user_id: str, features: torch.Tensor, label: bool | int | float) -> None:
        self._thumbs.append((self._user(user_id), self._row(features), thumb_label(label)))

    def add_ranking(self, user_id: str, group_id: str, features_best_first: torch.Tensor) -> None:
        if features_best_first.ndim != 2 or features_best_first.shape[0] < 2:
            raise ValueError(f"ranking features of shape {tuple(features_best_first.shape)}: "
                             "need (K ≥ 2, D), best first")
        user = self._user(user_id)
        rows = [self._row(choice) for choice in features_best_first]
        for better, worse in ranking_pairs(len(rows)):
            self._pairs.append((user, rows[better], rows[worse], (user, group_id)))

    def add(self, event: FeedbackEvent) -> None:
        if isinstance(event, ThumbEvent):
            self.add_thumb(event.user_id, event.features, event.label)
        else:
            self.add_ranking(event.user_id, event.group_id, event.features)

    def build(self) -> FeedbackSet:
        features = torch.stack(self._rows) if self._rows else torch.zeros(0, self.feature_dim)
        group_sizes: dict[tuple[int, str], int] = {}
        for *_, group in self._pairs:
            group_sizes[group] = group_sizes.get(group, 0) + 1
        thumbs = torch.tensor([(u, i) for u, i, _ in self._thumbs], dtype=torch.int64).reshape(-1, 2)
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


@dataclass
class OnlineAccuracy:
    """Running accuracy of predictions made on each event *before* training on it."""

    correct: float = 0.0  # sum of `RewardModel.event_accuracy` results
    events: int = 0  # events scored

    def record(self, accuracy: float) -> None:
        self.correct += accuracy
        self.events += 1

    @property
    def accuracy(self) -> float | None:
        """Mean accuracy so far; None before the first event."""
        return self.correct / self.events if self.events else None


# --------------------------------------------------------------------------- towers


class TextTower(nn.Module):
    """Standardise features (training mean/std), then an MLP (or a linear map) to ``out_dim``."""

    def __init__(self, feature_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(feature_dim))
        if hidden:
            self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
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
        return sum(layer.weight.pow(2).sum() for layer in self.net if isinstance(layer, nn.Linear))


# --------------------------------------------------------------------------- model


def _adam(parameters: list[torch.Tensor], loss_fn, steps: int, learning_rate: float) -> None:
    # Full batch, step size annealed (cosine) to a tenth: a large early step for
    # speed, a small late one so the result does not depend on where the last
    # few oscillating steps stopped.
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    for step in range(steps):
        progress = step / max(steps - 1, 1)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()


@dataclass
class _Design:
    """Each event as ``offset + θ_u · phi`` with θ_u = (b_u, factors_u), for the user-head solve."""

    user: torch.Tensor  # (E,) user index
    offset: torch.Tensor  # (E,) population logit (thumbs) or logit difference (pairs)
    phi: torch.Tensor  # (E, 1 + k'): [1, proj(x)] for thumbs, [0, proj(a) − proj(b)] for pairs
    label: torch.Tensor  # (E,) 0/1 (pairs: 1)
    weight: torch.Tensor  # (E,)


@dataclass
class RewardModel:
    """Population head + per-user (bias, factors) on a shared user tower; see the module docstring."""

    config: RewardConfig
    feature_dim: int
    population: TextTower = field(init=False)
    user_tower: TextTower = field(init=False)
    user_index: dict[str, int] = field(default_factory=dict)
    user_bias: torch.Tensor = field(init=False)  # (U,)
    user_factors: torch.Tensor = field(init=False)  # (U, k)

    def __post_init__(self) -> None:
        # Seeded initialisation without touching the caller's global RNG (a learner
        # samples completions with it).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.population = TextTower(self.feature_dim, self.config.population_hidden, 1)
            self.user_tower = TextTower(self.feature_dim, self.config.user_hidden,
                                        max(self.config.rank, 1))
        self.user_bias = torch.zeros(0)
        self.user_factors = torch.zeros(0, self.factor_width)

    @property
    def factor_width(self) -> int:
        """Factors per user: the tower's ``rank`` (+1 for the weight on the population reward)."""
        return self.config.rank + int(self.config.crowd_factor)

    def _projection(self, features: torch.Tensor, population: torch.Tensor) -> torch.Tensor:
        """(N, factor_width) what each user's factors multiply: [r_pop(x)], g(x)."""
        tower = self.user_tower(features)[:, : self.config.rank]  # (N, k)
        if self.config.crowd_factor:
            return torch.cat([population[:, None], tower], dim=1)
        return tower

    # ---- fitting -------------------------------------------------------------

    @classmethod
    def fit(cls, data: FeedbackSet, config: RewardConfig | None = None,
            personalize: bool = True) -> RewardModel:
        """Fit the population head, then (``personalize``) the user tower and every user's head."""
        config = config or RewardConfig()
        model = cls(config, int(data.features.shape[1]))
        model.fit_population(data)
        if personalize:
            model.fit_user_part(data)
        return model

    def fit_population(self, data: FeedbackSet) -> None:
        """Fit r_pop on every event, ignoring who gave it (users' parts are left as they are)."""
        features = data.features
        # A fit starts from the seeded initialisation, so a population refitted on
        # other data (e.g. a cold-start subset) is the model a fresh fit would give.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.population = TextTower(self.feature_dim, self.config.population_hidden, 1)
        self.population.set_standardisation(features)
        # Thumbs on one text are summed into (weight, positives) per text: the loss is
        # linear in the labels, so this is exact and makes a step cost O(texts).
        count = torch.bincount(data.thumb_item, minlength=features.shape[0]).float()
        positives = torch.bincount(data.thumb_item, weights=data.thumb_label,
                                   minlength=features.shape[0]).float()
        used = count > 0
        total = max(float(count.sum() + data.pair_weight.sum()), 1.0)
        decay = self.config.population_weight_decay

        def loss() -> torch.Tensor:
            logits = self.population(features)[:, 0]  # (I,)
            thumbs = (count[used] * F.softplus(logits[used]) - positives[used] * logits[used]).sum()
            pairs = pair_loss(logits[data.pair_better], logits[data.pair_worse], data.pair_weight)
            return (thumbs + pairs) / total + decay * self.population.weight_penalty()

        self.population.train()
        _adam(list(self.population.net.parameters()), loss, self.config.steps, self.config.learning_rate)
        self.population.eval()

    def _ensure_users(self, user_ids: Iterable[str]) -> torch.Tensor:
        """Indices of ``user_ids`` in this model, adding new users with a zero head."""
        new = [u for u in dict.fromkeys(user_ids) if u not in self.user_index]
        if new:
            for user_id in new:
                self.user_index[user_id] = len(self.user_index)
            self.user_bias = torch.cat([self.user_bias, torch.zeros(len(new))])
            self.user_factors = torch.cat([self.user_factors, torch.zeros(len(new), self.factor_width)])
        return torch.tensor([self.user_index[u] for u in user_ids], dtype=torch.int64)

    def fit_user_part(self, data: FeedbackSet) -> None:
        """Fit the user tower jointly with every user's head (population frozen), then re-solve heads."""
        config = self.config
        local_to_model = self._ensure_users(data.user_ids)
        with torch.no_grad():
            population = self.population(data.features)[:, 0]  # (I,)
        thumb_user = local_to_model[data.thumb_user]
        pair_user = local_to_model[data.pair_user]
        users = torch.unique(torch.cat([thumb_user, pair_user]))
        total = max(float(data.thumb_label.shape[0] + data.pair_weight.sum()), 1.0)
        if config.rank > 0 and config.steps > 0:
            self.user_tower.set_standardisation(data.features)
            generator = torch.Generator().manual_seed(config.seed)
            bias = torch.zeros(len(self.user_index), requires_grad=True)
            factors = (0.01 * torch.randn(len(self.user_index), self.factor_width, generator=generator)
                       ).requires_grad_(True)

            def loss() -> torch.Tensor:
                projection = self._projection(data.features, population)  # (I, k')
                thumb_scores = (population[data.thumb_item] + bias[thumb_user]
                                + (projection[data.thumb_item] * factors[thumb_user]).sum(-1))
                pair_margin = (projection[data.pair_better] - projection[data.pair_worse])  # (P, k)
                better = population[data.pair_better] + (pair_margin * factors[pair_user]).sum(-1)
                worse = population[data.pair_worse]
                fit = thumb_loss(thumb_scores, data.thumb_label) + pair_loss(better, worse, data.pair_weight)
                shrink = config.user_l2 * factors[users].pow(2).sum() + config.bias_l2 * bias[users].pow(2).sum()
                return (fit + shrink) / total + config.user_tower_weight_decay * self.user_tower.weight_penalty()

            self.user_tower.train()
            _adam(list(self.user_tower.net.parameters()) + [bias, factors], loss, config.steps,
                  config.learning_rate)
            self.user_tower.eval()
        self.refit_heads(data)

    def _design(self, data: FeedbackSet, local_to_model: torch.Tensor) -> _Design:
        with torch.no_grad():
            population = self.population(data.features)[:, 0]  # (I,)
            projection = self._projection(data.features, population)  # (I, k')
        ones = torch.ones(data.thumb_item.shape[0], 1)
        zeros = torch.zeros(data.pair_better.shape[0], 1)
        return _Design(
            user=local_to_model[torch.cat([data.thumb_user, data.pair_user])],
            offset=torch.cat([population[data.thumb_item],
                              population[data.pair_better] - population[data.pair_worse]]),
            phi=torch.cat([
                torch.cat([ones, projection[data.thumb_item]], dim=1),
                torch.cat([zeros, projection[data.pair_better] - projection[data.pair_worse]], dim=1),
            ]),
            label=torch.cat([data.thumb_label, torch.ones(data.pair_better.shape[0])]),
            weight=torch.cat([torch.ones(data.thumb_item.shape[0]), data.pair_weight]),
        )

    def refit_heads(self, data: FeedbackSet, user_l2: float | None = None,
                    bias_l2: float | None = None) -> None:
        """Re-solve the heads of every user in ``data`` exactly, towers frozen (batched Newton).

        ``user_l2``/``bias_l2`` override the configured shrinkage (to choose it on
        held-out data without refitting the towers).
        """
        local_to_model = self._ensure_users(data.user_ids)
        design = self._design(data, local_to_model)
        user_l2 = self.config.user_l2 if user_l2 is None else user_l2
        bias_l2 = self.config.bias_l2 if bias_l2 is None else bias_l2
        theta = _solve_heads(design, len(self.user_index), self.factor_width, bias_l2, user_l2,
                             self.config.newton_steps)
        # Every user of ``data`` gets the solution, also one without events (a zero head).
        users = torch.unique(local_to_model)
        self.user_bias[users] = theta[users, 0]
        self.user_factors[users] = theta[users, 1:]

    def fit_user(self, user_id: str, data: FeedbackSet) -> None:
        """Fit one user's head on their own events, population and towers frozen (milliseconds).

        ``data`` may hold only this user's events; every event in it is taken as theirs.
        """
        own = FeedbackSet(data.features, [user_id], torch.zeros_like(data.thumb_user), data.thumb_item,
                          data.thumb_label, torch.zeros_like(data.pair_user), data.pair_better,
                          data.pair_worse, data.pair_weight)
        self.refit_heads(own)

    # ---- scoring -------------------------------------------------------------

    @torch.no_grad()
    def population_score(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) population rewards of features (N, D)."""
        return self.population(features.float())[:, 0]

    @torch.no_grad()
    def score(self, user_id: str, features: torch.Tensor) -> torch.Tensor:
        """(N,) rewards of features (N, D) for ``user_id``; an unknown user gets the population's."""
        features = features.float()
        rewards = self.population(features)[:, 0]
        index = self.user_index.get(user_id)
        if index is None:
            return rewards
        projection = self._projection(features, rewards)  # (N, k')
        return rewards + self.user_bias[index] + projection @ self.user_factors[index]

    @torch.no_grad()
    def score_votes(self, user_ids: Sequence[str], features: torch.Tensor, user: torch.Tensor,
                    item: torch.Tensor) -> torch.Tensor:
        """(V,) rewards of many (user, text) pairs at once: ``user``/``item`` index ``user_ids``/``features``."""
        population = self.population(features.float())[:, 0]
        projection = self._projection(features.float(), population)
        # One extra zero head at the end stands for every unknown user.
        unknown = len(self.user_index)
        bias = torch.cat([self.user_bias, torch.zeros(1)])
        factors = torch.cat([self.user_factors, torch.zeros(1, self.factor_width)])
        model_index = torch.tensor([self.user_index.get(u, unknown) for u in user_ids], dtype=torch.int64)
        user = model_index[user]
        return population[item] + bias[user] + (projection[item] * factors[user]).sum(-1)

    def event_accuracy(self, event: FeedbackEvent) -> float:
        """How right the current model is on ``event``: call before training on it.

        Thumbs: 1.0 if the reward's sign matches the label (reward > 0 ⇔ up), else 0.0.
        Rankings: the fraction of its pairs the model orders like the user.
        """
        if isinstance(event, ThumbEvent):
            reward = float(self.score(event.user_id, event.features[None])[0])
            return float((reward > 0) == (thumb_label(event.label) == 1.0))
        if event.features.ndim != 2 or event.features.shape[0] < 2:
            raise ValueError(f"ranking features of shape {tuple(event.features.shape)}: "
                             "need (K ≥ 2, D), best first")
        rewards = self.score(event.user_id, event.features)
        pairs = ranking_pairs(event.features.shape[0])
        return sum(float(rewards[b] > rewards[w]) for b, w in pairs) / len(pairs)

    # ---- persistence -----------------------------------------------------------

    def _tower_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"population.{k}": v for k, v in self.population.state_dict().items()}
        tensors |= {f"user_tower.{k}": v for k, v in self.user_tower.state_dict().items()}
        return tensors

    def to_bytes(self) -> bytes:
        """The whole model (towers + every user's head) as safetensors bytes."""
        tensors = self._tower_tensors() | {"user_bias": self.user_bias, "user_factors": self.user_factors}
        metadata = {"format": FORMAT_VERSION, "config": json.dumps(asdict(self.config)),
                    "feature_dim": str(self.feature_dim), "user_ids": json.dumps(list(self.user_index))}
        return save_tensors({k: v.contiguous() for k, v in tensors.items()}, metadata)

    @classmethod
    def from_bytes(cls, blob: bytes) -> RewardModel:
        """A model saved by `to_bytes`."""
        metadata = _safetensors_metadata(blob)
        if metadata.get("format") != FORMAT_VERSION:
            raise ValueError(f"reward model format={metadata.get('format')!r} is not "
                             f"{FORMAT_VERSION!r}; refit the model with this version")
        model = cls(RewardConfig(**json.loads(metadata["config"])), int(metadata["feature_dim"]))
        tensors = load_tensors(blob)
        model.population.load_state_dict({k.removeprefix("population."): v for k, v in tensors.items()
                                          if k.startswith("population.")})
        model.user_tower.load_state_dict({k.removeprefix("user_tower."): v for k, v in tensors.items()
                                          if k.startswith("user_tower.")})
        model.population.eval()
        model.user_tower.eval()
        model.user_index = {u: i for i, u in enumerate(json.loads(metadata["user_ids"]))}
        model.user_bias = tensors["user_bias"].clone()
        model.user_factors = tensors["user_factors"].clone()
        return model

    def user_head_bytes(self, user_id: str) -> bytes:
        """One user's head (bias + factors) as safetensors bytes, e.g. for a Redis value."""
        index = self.user_index.get(user_id)
        if index is None:
            raise KeyError(f"user_id={user_id!r} has no head; fit_user() first (unknown users "
                           "are scored by the population)")
        return save_tensors({"bias": self.user_bias[index : index + 1].clone(),
                             "factors": self.user_factors[index].clone()},
                            {"format": FORMAT_VERSION, "factor_width": str(self.factor_width)})

    def load_user_head(self, user_id: str, blob: bytes) -> None:
        """Install a head saved by `user_head_bytes` (it must come from a model of the same shape)."""
        tensors = load_tensors(blob)
        if tensors["factors"].shape != (self.factor_width,):
            raise ValueError(f"user head with {tensors['factors'].shape[0]} factors does not fit a "
                             f"model with {self.factor_width}; refit it with fit_user()")
        index = int(self._ensure_users([user_id])[0])
        self.user_bias[index] = tensors["bias"][0]
        self.user_factors[index] = tensors["factors"]


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    # safetensors.torch.load() drops the header's __metadata__; read it from the
    # header directly (8-byte little-endian length, then JSON).
    if len(blob) < 8:
        raise ValueError("reward model bytes are truncated; expected a safetensors blob")
    (header_length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_length])
    return header.get("__metadata__", {})


def _solve_heads(design: _Design, num_users: int, num_factors: int, bias_l2: float, user_l2: float,
                 steps: int) -> torch.Tensor:
    """(U, 1+k) L2-penalised logistic-regression solutions of every user at once (Newton).

    Each user's problem is convex and (k+1)-dimensional; the Hessians are
    accumulated per user with ``index_add_`` and solved as one batched system.
    """
    width = 1 + num_factors
    penalty = torch.diag(torch.tensor([bias_l2] + [user_l2] * num_factors))  # (1+k, 1+k)
    # A tiny ridge keeps users with no events (or no thumbs: the bias is then
    # unidentified) solvable when a penalty is 0.
    penalty = penalty + 1e-6 * torch.eye(width)
    theta = torch.zeros(num_users, width)
    phi, weight = design.phi.double(), design.weight.double()
    outer = phi[:, :, None] * phi[:, None, :]  # (E, 1+k, 1+k)
    for _ in range(steps):
        logits = design.offset.double() + (phi * theta.double()[design.user]).sum(-1)
        prob = torch.sigmoid(logits)
        grad = torch.zeros(num_users, width, dtype=torch.float64).index_add_(
            0, design.user, (weight * (prob - design.label.double()))[:, None] * phi)
        hess = torch.zeros(num_users, width, width, dtype=torch.float64).index_add_(
            0, design.user, (weight * prob * (1 - prob))[:, None, None] * outer)
        grad = grad + theta.double() @ penalty.double()
        hess = hess + penalty.double()
        step = torch.linalg.solve(hess, grad[..., None])[..., 0]
        # Clipped Newton: with a near-zero penalty and separable votes a full step
        # can overshoot far into the flat part of the sigmoid.
        theta = theta - step.clamp(-4.0, 4.0).float()
        if step.numel() == 0 or float(step.abs().max()) < 1e-6:
            break
    return theta
