"""Evaluate the project's reward models on real people's votes (Polis), issue 5.

For each protocol (`evaluations.polis`: seen texts, new texts) and each
conversation:

1. split the votes (seeded);
2. choose the reward model's settings on the training votes only: split the
   training votes again by the same protocol (`selection_folds` times, with
   other seeds); on each inner training part fit each population preset and
   keep the one whose population head is most accurate on the inner held-out
   parts; on top of it fit each user preset and re-solve the user heads for
   each shrinkage strength of `EvalConfig.shrinkage_grid` (towers frozen, so
   this is cheap); keep the best per-user setting;
3. fit that setting on all training votes and score the held-out votes with
   always-agree, the population head (the same model without its user part)
   and the per-user reward. Every population head weighs each voter by their
   agreement with everyone else on the training votes, as the learners do
   (`learners.taste_reliability`), unless `EvalConfig.rater_reliability` is off;
4. cold start: a random quarter of the tested users keeps only N training
   votes. The model is fitted on the data with N = 0; for each N the population
   head is refitted on the reduced data with those N votes, and every user's
   head is re-solved (towers frozen, as a learner does for a newcomer). At
   N = 0 the per-user model *is* the population (zero heads).

Accuracies are pooled over conversations by counting votes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from evaluations.encoders import TextEncoder
from evaluations.polis import Conversation, Split, cold_start, split_new_texts, split_seen_texts
from learners.reward_config import RewardConfig
from learners.reward_data import FeedbackSet
from learners.reward_model import RewardModel
from learners.taste_reliability import taste_weights

PROTOCOLS = ("seen_texts", "new_texts")
SPLITTERS: dict[str, Callable[..., Split]] = {
    "seen_texts": split_seen_texts,
    "new_texts": split_new_texts,
}

# Two regimes for each half of the model, chosen per conversation on training
# data: towers that can tell every seen statement apart (an MLP, light decay),
# and smooth linear towers that generalise to statements no one has judged.
POPULATION_PRESETS: dict[str, dict[str, float]] = {
    "mlp": {"population_hidden": 128, "population_weight_decay": 1e-3},
    "linear": {"population_hidden": 0, "population_weight_decay": 0.1},
    # Decay so strong that only the intercept is left: an agree rate, for when
    # the text says nothing that carries over to new statements.
    "constant": {"population_hidden": 0, "population_weight_decay": 100.0},
}
USER_PRESETS: dict[str, dict[str, float]] = {
    "mlp": {"user_hidden": 128, "user_tower_weight_decay": 1e-3, "rank": 3},
    "linear": {"user_hidden": 0, "user_tower_weight_decay": 1.0, "rank": 2},
}
# (user_l2, bias_l2): from light to strong enough that a conversation where
# personal taste does not carry over to new statements can fall back to the population.
DEFAULT_SHRINKAGE: tuple[tuple[float, float], ...] = (
    (1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (10.0, 3.0), (30.0, 3.0), (30.0, 10.0), (100.0, 3.0),
    (100.0, 10.0), (300.0, 30.0),
)


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 0  # seeds every split and every model
    holdout_fraction: float = 0.25  # share of each user's votes (seen) / of statements (new) held out
    min_votes: int = 20  # non-pass votes a user needs to be evaluated
    cold_start_sizes: tuple[int, ...] = (0, 5, 10, 20)  # N training votes of each cold-start user
    cold_start_user_fraction: float = 0.25  # share of tested users made cold-start users
    protocols: tuple[str, ...] = PROTOCOLS  # which protocols to run
    # Settings the presets do not override: 150 annealed Adam steps at 0.05 match
    # 300 at 0.03 on Polis (measured) in half the time.
    base: RewardConfig = RewardConfig(steps=150, learning_rate=0.05)
    population_presets: dict[str, dict] = field(default_factory=lambda: dict(POPULATION_PRESETS))
    user_presets: dict[str, dict] = field(default_factory=lambda: dict(USER_PRESETS))
    shrinkage_grid: tuple[tuple[float, float], ...] = DEFAULT_SHRINKAGE  # (user_l2, bias_l2) candidates
    selection_folds: int = 2  # inner splits of the training votes the setting is chosen on
    # Each voter's weight in the population head by their agreement with everyone else
    # (learners.taste_reliability), as the learners fit it; False: every voter weighs one.
    rater_reliability: bool = True

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise ValueError(f"protocols={self.protocols} must be a non-empty subset of {PROTOCOLS}")
        if 0 not in self.cold_start_sizes or any(n < 0 for n in self.cold_start_sizes):
            raise ValueError(f"cold_start_sizes={self.cold_start_sizes} must be ≥ 0 and include 0 "
                             "(the point where the per-user model must equal the population)")
        if self.selection_folds < 1:
            raise ValueError(f"selection_folds={self.selection_folds} must be ≥ 1")
        if not self.population_presets or not self.user_presets or not self.shrinkage_grid:
            raise ValueError("population_presets, user_presets and shrinkage_grid need at least "
                             "one candidate each")

    def population_weights(self, train: FeedbackSet) -> torch.Tensor | None:
        """(U,) each voter's weight in the population head, or None (all equal)."""
        return taste_weights(train) if self.rater_reliability else None

    def reward_config(self, setting: Setting) -> RewardConfig:
        """The RewardConfig of a chosen setting (towers are trained with the base shrinkage)."""
        return dataclasses.replace(self.base, seed=self.seed,
                                   **self.population_presets[setting.population_preset],
                                   **self.user_presets[setting.user_preset])


@dataclass(frozen=True)
class Setting:
    """What `choose_setting` picked on training data for one conversation."""

    population_preset: str
    user_preset: str
    user_l2: float
    bias_l2: float

    def describe(self) -> str:
        """Compact: population preset / user preset, then the shrinkage λ (factors/bias)."""
        return f"{self.population_preset}/{self.user_preset} λ={self.user_l2:g}/{self.bias_l2:g}"


@dataclass
class Tally:
    """Correct predictions of the three predictors on one set of held-out votes."""

    votes: int = 0
    always_agree: int = 0
    population: int = 0
    per_user: int = 0

    def add(self, other: Tally) -> None:
        for name in ("votes", "always_agree", "population", "per_user"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def accuracies(self) -> dict[str, float]:
        """Accuracies in 0–1 (NaN with no votes), keyed as in the issue's JSON."""
        total = self.votes or float("nan")
        return {"always_agree": self.always_agree / total, "population": self.population / total,
                "per_user": self.per_user / total, "votes": self.votes}


@dataclass
class ConversationResult:
    name: str
    users: int  # users with held-out votes
    tally: Tally
    setting: Setting  # chosen on training data
    cold_start: dict[int, Tally]
    # voters of the training votes, and of them those the population head weighs below
    # one and at zero (learners.taste_reliability); both 0 with rater reliability off
    voters: int = 0
    discounted: int = 0
    ignored: int = 0


@dataclass
class ProtocolResult:
    protocol: str
    conversations: list[ConversationResult]

    def pooled(self) -> Tally:
        total = Tally()
        for result in self.conversations:
            total.add(result.tally)
        return total

    def cold_start(self) -> dict[int, Tally]:
        sizes = sorted({n for result in self.conversations for n in result.cold_start})
        pooled = {n: Tally() for n in sizes}
        for result in self.conversations:
            for n, tally in result.cold_start.items():
                pooled[n].add(tally)
        return pooled

    def to_json(self) -> dict:
        return {
            "pooled": self.pooled().accuracies(),
            "cold_start": {str(n): t.accuracies() for n, t in self.cold_start().items()},
            "conversations": {
                r.name: r.tally.accuracies() | {"users": r.users} | dataclasses.asdict(r.setting)
                | {"voters": r.voters, "voters_discounted": r.discounted,
                   "voters_ignored": r.ignored}
                for r in self.conversations
            },
        }


@dataclass
class EvalReport:
    encoder: str
    config: EvalConfig
    results: dict[str, ProtocolResult]
    seconds: float
    load_average: tuple[float, float, float]

    def to_json(self) -> dict:
        """The issue's layout: seen texts at the top level, new texts under ``new_texts``."""
        report: dict = {}
        if "seen_texts" in self.results:
            report |= self.results["seen_texts"].to_json()
        if "new_texts" in self.results:
            report["new_texts"] = self.results["new_texts"].to_json()
        report["protocol"] = {
            "encoder": self.encoder,
            "seed": self.config.seed,
            "holdout_fraction": self.config.holdout_fraction,
            "min_votes": self.config.min_votes,
            "rater_reliability": self.config.rater_reliability,
            "cold_start_user_fraction": self.config.cold_start_user_fraction,
            "seen_texts": "per eligible user, floor(holdout_fraction * n) random votes held out; "
                          "training: every other vote of every participant",
            "new_texts": "per conversation, holdout_fraction of the statements held out; test: "
                         "eligible users' votes on them; training: votes on the other statements",
            "selection": "per conversation, on a split of the training votes by the same "
                         "protocol: the population preset (best population accuracy), then the "
                         "user preset and shrinkage on top of it (best per-user accuracy)",
        }
        report["seconds"] = self.seconds
        report["load_average_1m_5m_15m"] = list(self.load_average)
        return report


# --------------------------------------------------------------------------- core


def feedback_set(conversation: Conversation, features: torch.Tensor, votes: np.ndarray) -> FeedbackSet:
    """The votes at ``votes`` as thumbs on the conversation's statements."""
    return FeedbackSet.from_thumbs(
        features,
        conversation.user_ids,
        torch.from_numpy(conversation.vote_user[votes]),
        torch.from_numpy(conversation.vote_statement[votes]),
        torch.from_numpy(conversation.vote_label[votes]),
    )


def score_split(model: RewardModel, conversation: Conversation, features: torch.Tensor,
                test: np.ndarray) -> Tally:
    """Count the held-out votes each predictor gets right (reward > 0 ⇔ agree)."""
    labels = torch.from_numpy(conversation.vote_label[test]) > 0.5
    items = torch.from_numpy(conversation.vote_statement[test])
    users = torch.from_numpy(conversation.vote_user[test])
    population = model.population_score(features)[items] > 0
    per_user = model.score_votes(conversation.user_ids, features, users, items) > 0
    return Tally(
        votes=int(labels.numel()),
        always_agree=int(labels.sum()),
        population=int((population == labels).sum()),
        per_user=int((per_user == labels).sum()),
    )


def _with_population(config: RewardConfig, population: RewardModel) -> RewardModel:
    """A fresh model of ``config`` that shares the already fitted population head."""
    model = RewardModel(config, population.feature_dim)
    model.population = population.population
    return model


def choose_setting(conversation: Conversation, features: torch.Tensor, split: Split,
                   protocol: str, config: EvalConfig) -> Setting:
    """The setting with the best accuracy on inner splits of the training votes.

    The population preset is chosen on the population's own accuracy, so that the
    population baseline is the best one we have; the user preset and shrinkage
    are then chosen for the per-user model built on that population, which
    therefore equals the baseline exactly for a user with no votes. Counts are
    summed over `EvalConfig.selection_folds` inner splits (small conversations
    hold out only a dozen statements per split), and a tie goes to the stronger
    shrinkage, i.e. toward the population.
    """
    folds = []
    for fold in range(config.selection_folds):
        inner = SPLITTERS[protocol](conversation.restrict(split.train), seed=config.seed + 1 + fold,
                                    holdout_fraction=config.holdout_fraction,
                                    min_votes=config.min_votes)
        train = feedback_set(conversation, features, split.train[inner.train])
        folds.append((train, split.train[inner.test], config.population_weights(train)))
    first_user_preset = next(iter(config.user_presets))
    population_correct: dict[str, int] = {}
    populations: dict[str, list[RewardModel]] = {}
    for name in config.population_presets:
        setting = Setting(name, first_user_preset, config.base.user_l2, config.base.bias_l2)
        populations[name] = []
        for train, test, weights in folds:
            model = RewardModel(config.reward_config(setting), int(features.shape[1]))
            model.fit_population(train, weights)
            populations[name].append(model)
            population_correct[name] = population_correct.get(name, 0) + score_split(
                model, conversation, features, test).population
    population_preset = max(population_correct, key=population_correct.__getitem__)

    per_user_correct: dict[Setting, int] = {}
    for name in config.user_presets:
        setting = Setting(population_preset, name, config.base.user_l2, config.base.bias_l2)
        for (train, test, _), population in zip(folds, populations[population_preset]):
            model = _with_population(config.reward_config(setting), population)
            model.fit_user_part(train)
            for user_l2, bias_l2 in config.shrinkage_grid:
                model.refit_heads(train, user_l2=user_l2, bias_l2=bias_l2)
                candidate = dataclasses.replace(setting, user_l2=user_l2, bias_l2=bias_l2)
                per_user_correct[candidate] = per_user_correct.get(candidate, 0) + score_split(
                    model, conversation, features, test).per_user
    best = max(per_user_correct.values())
    tied = [c for c, correct in per_user_correct.items() if correct == best]
    return max(tied, key=lambda c: (c.user_l2 + c.bias_l2, c.bias_l2))


def fit_setting(train: FeedbackSet, config: EvalConfig, setting: Setting,
                weights: torch.Tensor | None) -> RewardModel:
    """Fit population and towers (trained with the base shrinkage), then solve heads with the chosen one.

    The towers are trained exactly as during selection, where only the heads
    were re-solved for each shrinkage strength.
    """
    model = RewardModel.fit(train, config.reward_config(setting), weights)
    model.refit_heads(train, user_l2=setting.user_l2, bias_l2=setting.bias_l2)
    return model


def evaluate_conversation(conversation: Conversation, features: torch.Tensor, protocol: str,
                          config: EvalConfig) -> ConversationResult:
    """Split, choose the setting on training data, fit, score; then the cold-start curve."""
    split = SPLITTERS[protocol](conversation, seed=config.seed,
                                holdout_fraction=config.holdout_fraction, min_votes=config.min_votes)
    setting = choose_setting(conversation, features, split, protocol, config)
    train = feedback_set(conversation, features, split.train)
    weights = config.population_weights(train)
    model = fit_setting(train, config, setting, weights)
    tally = score_split(model, conversation, features, split.test)
    voters = torch.unique(train.thumb_user)
    voter_weights = torch.ones(len(voters)) if weights is None else weights[voters]

    curve: dict[int, Tally] = {}
    cold_model: RewardModel | None = None
    for size in sorted(config.cold_start_sizes):
        cold = cold_start(split, size, seed=config.seed, user_fraction=config.cold_start_user_fraction)
        train = feedback_set(conversation, features, cold.train)
        if cold_model is None:  # N = 0 (sizes include 0 and are sorted): towers fitted once
            cold_model = fit_setting(train, config, setting, config.population_weights(train))
        else:  # the population on exactly this reduced data; every head re-solved on it
            cold_model.fit_population(train, config.population_weights(train))
            cold_model.refit_heads(train, user_l2=setting.user_l2, bias_l2=setting.bias_l2)
        curve[size] = score_split(cold_model, conversation, features, cold.test)
    users = int(np.unique(conversation.vote_user[split.test]).size)
    return ConversationResult(conversation.name, users, tally, setting, curve, len(voters),
                              int((voter_weights < 1).sum()), int((voter_weights == 0).sum()))


def evaluate(conversations: list[Conversation], encoder: TextEncoder, config: EvalConfig,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Run every protocol of ``config`` on every conversation; ``progress`` is told each step."""
    torch.set_num_threads(1)  # shared 2-core machines: one thread is as fast and fair
    started = time.perf_counter()
    features: dict[str, torch.Tensor] = {}
    for conversation in conversations:
        if progress:
            progress(f"encoding {conversation.name} ({len(conversation.texts)} texts)")
        features[conversation.name] = encoder.encode(conversation.texts).float()
    results: dict[str, ProtocolResult] = {}
    for protocol in config.protocols:
        per_conversation = []
        for conversation in conversations:
            if progress:
                progress(f"{protocol}: {conversation.name}")
            per_conversation.append(
                evaluate_conversation(conversation, features[conversation.name], protocol, config))
        results[protocol] = ProtocolResult(protocol, per_conversation)
    return EvalReport(encoder.name, config, results, time.perf_counter() - started, os.getloadavg())


# --------------------------------------------------------------------------- output


def write_json(report: EvalReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, allow_nan=True) + "\n")


def plot_cold_start(report: EvalReport, path: Path) -> None:
    """PNG of accuracy vs N training votes per cold-start user, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(report.results)
    figure, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4), squeeze=False)
    for axis, protocol in zip(axes[0], protocols):
        curve = report.results[protocol].cold_start()
        sizes = sorted(curve)
        for key, label, style in (("per_user", "per-user", "o-"), ("population", "population", "s--"),
                                  ("always_agree", "always agree", ":")):
            axis.plot(sizes, [100 * curve[n].accuracies()[key] for n in sizes], style, label=label)
        axis.set_title(f"{protocol.replace('_', ' ')} — cold start ({report.encoder})")
        axis.set_xlabel("training votes per cold-start user (N)")
        axis.set_ylabel("held-out accuracy (%)")
        axis.set_xticks(sizes)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def render_tables(report: EvalReport) -> list:
    """rich Tables: per protocol, one row per conversation and a pooled row; then the cold-start curve."""
    from rich.table import Table

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    tables = []
    for protocol, result in report.results.items():
        table = Table(title=f"{protocol.replace('_', ' ')} — encoder {report.encoder}, "
                            f"seed {report.config.seed}")
        for column in ("conversation", "users", "test votes", "always agree", "population",
                       "per-user", "Δ vs pop", "voters discounted / at 0",
                       "towers pop/user, shrinkage"):
            table.add_column(column, justify="left" if column.startswith(("conversation", "towers")) else "right")
        rows = [(r.name, r.users, r.tally, f"{r.discounted}/{r.voters} / {r.ignored}",
                 r.setting.describe()) for r in result.conversations]
        rows.append(("pooled", sum(r.users for r in result.conversations), result.pooled(),
                     (f"{sum(r.discounted for r in result.conversations)}/"
                      f"{sum(r.voters for r in result.conversations)} / "
                      f"{sum(r.ignored for r in result.conversations)}"), ""))
        for name, users, tally, voters, setting in rows:
            acc = tally.accuracies()
            table.add_row(name, str(users), str(tally.votes), pct(acc["always_agree"]),
                          pct(acc["population"]), pct(acc["per_user"]),
                          f"{100 * (acc['per_user'] - acc['population']):+.1f}", voters, setting,
                          style="bold" if name == "pooled" else None)
        tables.append(table)
        cold = Table(title=f"{protocol.replace('_', ' ')} — cold start (pooled)")
        for column in ("N votes", "test votes", "always agree", "population", "per-user", "Δ vs pop"):
            cold.add_column(column, justify="right")
        for size, tally in result.cold_start().items():
            acc = tally.accuracies()
            cold.add_row(str(size), str(tally.votes), pct(acc["always_agree"]), pct(acc["population"]),
                         pct(acc["per_user"]), f"{100 * (acc['per_user'] - acc['population']):+.1f}")
        tables.append(cold)
    return tables
