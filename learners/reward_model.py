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
towers frozen, the heads are re-solved exactly (`learners.reward_heads`).

Learner-facing API (events and data: `learners.reward_data`)::

    builder = FeedbackBuilder(feature_dim=D)
    builder.add(ThumbEvent("alice", x, 1)); builder.add(RankingEvent("bob", "p1", xs))
    model = RewardModel.fit(builder.build(), RewardConfig())   # population + every user
    model.score("alice", x_batch)                # (N,) rewards; unknown user → population
    model.event_accuracy(event)                  # before training on it: 1.0 right, 0.0 wrong
                                                 # (rankings: fraction of pairs in order)
    model.fit_user("carol", builder_of_carol.build())  # towers frozen, ≪ 1 s

Defaults suit a few thousand events on CPU (a full fit of ~110k Polis votes
takes seconds); `evaluations.reward_eval` shows how the shrinkage is chosen on
held-out data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from contracts.reward_sketch import RewardSketch
from learners.reward_config import RewardConfig
from learners.reward_data import (
    FeedbackSet,
    RewardEvent,
    ThumbEvent,
    check_ranking_shape,
    ranking_pairs,
    thumb_label,
)
from learners.reward_heads import HeadDesign, head_precisions, solve_user_heads
from learners.reward_losses import pair_loss, thumb_loss
from learners.reward_tower import TextTower


def _annealed_adam(parameters: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor],
                   steps: int, learning_rate: float) -> None:
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
class RewardModel:
    """Population head + per-user (bias, factors) on a shared user tower (module docstring)."""

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
            population_weights: torch.Tensor | None = None) -> RewardModel:
        """Fit the population head, then the user tower and every user's head.

        ``population_weights`` (U,), indexed like ``data.user_ids``: how much each user's
        events count in the population head (``learners.taste_reliability``); the user
        part always takes every event at full weight."""
        config = config or RewardConfig()
        model = cls(config, int(data.features.shape[1]))
        model.fit_population(data, population_weights)
        model.fit_user_part(data)
        return model

    def fit_population(self, data: FeedbackSet,
                       user_weights: torch.Tensor | None = None) -> None:
        """Fit r_pop on every event, each weighted by its user's ``user_weights`` (U,)
        (default 1), not otherwise minding who gave it (users' parts are left as they are)."""
        features = data.features
        # A fit starts from the seeded initialisation, so a population refitted on
        # other data (e.g. a cold-start subset) is the model a fresh fit would give.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.population = TextTower(self.feature_dim, self.config.population_hidden, 1)
        self.population.set_standardisation(features)
        # Thumbs on one text are summed into (weight, positives) per text: the loss is
        # linear in the labels, so this is exact and makes a step cost O(texts).
        if user_weights is None:
            user_weights = torch.ones(len(data.user_ids))
        thumb_weight = user_weights.float()[data.thumb_user]
        pair_weight = data.pair_weight * user_weights.float()[data.pair_user]
        count = torch.bincount(data.thumb_item, weights=thumb_weight,
                               minlength=features.shape[0]).float()
        positives = torch.bincount(data.thumb_item, weights=data.thumb_label * thumb_weight,
                                   minlength=features.shape[0]).float()
        used = count > 0
        total = max(float(count.sum() + pair_weight.sum()), 1.0)
        decay = self.config.population_weight_decay

        def loss() -> torch.Tensor:
            logits = self.population(features)[:, 0]  # (I,)
            thumbs = (count[used] * F.softplus(logits[used]) - positives[used] * logits[used]).sum()
            pairs = pair_loss(logits[data.pair_better], logits[data.pair_worse], pair_weight)
            return (thumbs + pairs) / total + decay * self.population.weight_penalty()

        self.population.train()
        _annealed_adam(list(self.population.net.parameters()), loss, self.config.steps,
                       self.config.learning_rate)
        self.population.eval()

    def _ensure_users(self, user_ids: Iterable[str]) -> torch.Tensor:
        """Indices of ``user_ids`` in this model, adding new users with a zero head."""
        new = [u for u in dict.fromkeys(user_ids) if u not in self.user_index]
        if new:
            for user_id in new:
                self.user_index[user_id] = len(self.user_index)
            self.user_bias = torch.cat([self.user_bias, torch.zeros(len(new))])
            self.user_factors = torch.cat([self.user_factors,
                                           torch.zeros(len(new), self.factor_width)])
        return torch.tensor([self.user_index[u] for u in user_ids], dtype=torch.int64)

    def fit_user_part(self, data: FeedbackSet) -> None:
        """Fit the user tower jointly with every user's head (population frozen), then re-solve
        the heads."""
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
            factors = (0.01 * torch.randn(len(self.user_index), self.factor_width,
                                          generator=generator)).requires_grad_(True)

            def loss() -> torch.Tensor:
                projection = self._projection(data.features, population)  # (I, k')
                thumb_scores = (population[data.thumb_item] + bias[thumb_user]
                                + (projection[data.thumb_item] * factors[thumb_user]).sum(-1))
                pair_margin = projection[data.pair_better] - projection[data.pair_worse]  # (P, k')
                better = population[data.pair_better] + (pair_margin * factors[pair_user]).sum(-1)
                worse = population[data.pair_worse]
                fit = (thumb_loss(thumb_scores, data.thumb_label)
                       + pair_loss(better, worse, data.pair_weight))
                shrink = (config.user_l2 * factors[users].pow(2).sum()
                          + config.bias_l2 * bias[users].pow(2).sum())
                decay = config.user_tower_weight_decay * self.user_tower.weight_penalty()
                return (fit + shrink) / total + decay

            self.user_tower.train()
            _annealed_adam(list(self.user_tower.net.parameters()) + [bias, factors], loss,
                           config.steps, config.learning_rate)
            self.user_tower.eval()
        self.refit_heads(data)

    def _head_design(self, data: FeedbackSet, local_to_model: torch.Tensor) -> HeadDesign:
        with torch.no_grad():
            population = self.population(data.features)[:, 0]  # (I,)
            projection = self._projection(data.features, population)  # (I, k')
        ones = torch.ones(data.thumb_item.shape[0], 1)
        zeros = torch.zeros(data.pair_better.shape[0], 1)
        pair_margin = projection[data.pair_better] - projection[data.pair_worse]  # (P, k')
        return HeadDesign(
            user=local_to_model[torch.cat([data.thumb_user, data.pair_user])],
            offset=torch.cat([population[data.thumb_item],
                              population[data.pair_better] - population[data.pair_worse]]),
            phi=torch.cat([
                torch.cat([ones, projection[data.thumb_item]], dim=1),
                torch.cat([zeros, pair_margin], dim=1),
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
        design = self._head_design(data, local_to_model)
        user_l2 = self.config.user_l2 if user_l2 is None else user_l2
        bias_l2 = self.config.bias_l2 if bias_l2 is None else bias_l2
        theta = solve_user_heads(design, len(self.user_index), self.factor_width, bias_l2,
                                 user_l2, self.config.newton_steps)
        # Every user of ``data`` gets the solution, also one without events (a zero head).
        users = torch.unique(local_to_model)
        self.user_bias[users] = theta[users, 0]
        self.user_factors[users] = theta[users, 1:]

    def fit_user(self, user_id: str, data: FeedbackSet) -> None:
        """Fit one user's head on their own events, population and towers frozen (milliseconds).

        ``data`` may hold only this user's events; every event in it is taken as theirs.
        """
        self.refit_heads(_as_user(user_id, data))

    def sketch(self, user_id: str, data: FeedbackSet) -> RewardSketch | None:
        """The user's reward as a linear map of raw features with the Laplace posterior
        of their head, given their own events ``data`` (as ``fit_user``): what serving
        draws heads from to choose answers to compare. None with MLP towers (not linear)."""
        if self.config.population_hidden or self.config.user_hidden:
            return None
        own = _as_user(user_id, data)
        local_to_model = self._ensure_users(own.user_ids)
        index = int(local_to_model[0])
        theta = torch.cat([self.user_bias[index:index + 1], self.user_factors[index]])
        design = self._head_design(own, torch.zeros_like(local_to_model))
        precision = head_precisions(design, theta[None], self.config.bias_l2,
                                    self.config.user_l2)[0]
        population, offset_bias = _linear_map(self.population)
        offset = population[0]  # (D,)
        tower, tower_bias = _linear_map(self.user_tower)
        rows = [torch.zeros(1, self.feature_dim)]
        biases = [torch.ones(1)]
        if self.config.crowd_factor:
            rows.append(offset[None])
            biases.append(offset_bias)
        rows.append(tower[: self.config.rank])
        biases.append(tower_bias[: self.config.rank])
        return RewardSketch(
            offset=offset.numpy(), offset_bias=offset_bias.numpy(),
            projection=torch.cat(rows).numpy(), projection_bias=torch.cat(biases).numpy(),
            mean=theta.numpy(), covariance=torch.linalg.inv(precision).float().numpy())

    # ---- scoring -------------------------------------------------------------

    @torch.no_grad()
    def population_score(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) population rewards of features (N, D)."""
        return self.population(features.float())[:, 0]

    @torch.no_grad()
    def score(self, user_id: str, features: torch.Tensor) -> torch.Tensor:
        """(N,) rewards of features (N, D) for ``user_id``; an unknown user gets the population's
        reward."""
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
        """(V,) rewards of many (user, text) pairs at once: ``user``/``item`` index
        ``user_ids``/``features``."""
        population = self.population(features.float())[:, 0]
        projection = self._projection(features.float(), population)
        # One extra zero head at the end stands for every unknown user.
        unknown = len(self.user_index)
        bias = torch.cat([self.user_bias, torch.zeros(1)])
        factors = torch.cat([self.user_factors, torch.zeros(1, self.factor_width)])
        model_index = torch.tensor([self.user_index.get(u, unknown) for u in user_ids],
                                   dtype=torch.int64)
        user = model_index[user]
        return population[item] + bias[user] + (projection[item] * factors[user]).sum(-1)

    def event_accuracy(self, event: RewardEvent) -> float:
        """How right the current model is on ``event``: call before training on it.

        Thumbs: 1.0 if the reward's sign matches the label (reward > 0 ⇔ up), else 0.0.
        Rankings: the fraction of its pairs the model orders like the user.
        """
        if isinstance(event, ThumbEvent):
            reward = float(self.score(event.user_id, event.features[None])[0])
            return float((reward > 0) == (thumb_label(event.label) == 1.0))
        check_ranking_shape(event.features)
        rewards = self.score(event.user_id, event.features)
        pairs = ranking_pairs(event.features.shape[0])
        return sum(float(rewards[b] > rewards[w]) for b, w in pairs) / len(pairs)


def _as_user(user_id: str, data: FeedbackSet) -> FeedbackSet:
    """``data`` with every event taken as ``user_id``'s."""
    return FeedbackSet(data.features, [user_id], torch.zeros_like(data.thumb_user),
                       data.thumb_item, data.thumb_label, torch.zeros_like(data.pair_user),
                       data.pair_better, data.pair_worse, data.pair_weight)


@torch.no_grad()
def _linear_map(tower: TextTower) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear tower's (out, D) weights and (out,) bias on raw, unstandardised features."""
    layer = tower.net[0]
    weight = layer.weight / tower.scale  # (out, D)
    return weight.float(), (layer.bias - weight @ tower.mean).float()
