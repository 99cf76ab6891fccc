"""Honesty and harmlessness: heads shared by everyone, learned from every user's judgments of
those criteria, each rater weighted by how reliable they are.

Taste is personal; whether an answer is harmful or false is not, so these heads are
never per user. For each criterion, the judgments that say something about it:

- a thumb tagged with it: up → the answer is fine (1), down → it is not (0);
- a score tagged with it: 6-10 → fine, 1-5 → not;
- a correction tagged with it: the corrected answer is not fine, the user's text is.

Rankings order answers by preference and say nothing absolute: not used. Each user
is one rater; judgments of the same answer by several users meet on one item, the
overlap the reliability model checks raters against (``learners.rater_reliability``).
Where a prior exists (the written principles, ``learners.principles``) the head
starts from it and the judgments correct it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from contracts.gold_checks import GoldAnswer
from contracts.records import SHARED_CRITERIA
from learners.rater_reliability import CrowdConfig, CrowdFit, CrowdLabels, fit_crowd
from learners.training_data import TrainingExample

FINE_FROM_SCORE = 6  # a tagged score of 6-10 says "fine"

# features (N, D) -> the prior's log-odds (N,) that each answer is fine
Prior = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SharedHead:
    criterion: str
    fit: CrowdFit | None  # None: no judgments of this criterion yet, the prior alone
    prior: Prior | None
    judgments_used: dict[str, int]  # per user: their judgments of this criterion
    judged: torch.Tensor | None = None  # (I, D) features of the judged answers
    checks_used: dict[str, int] = field(default_factory=dict)  # per user: gold checks answered

    def fine_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) log-odds that each answer (N, D) is fine by this criterion."""
        features = features.float()
        prior = self.prior(features) if self.prior is not None else torch.zeros(len(features))
        return prior if self.fit is None else self.fit.logits(features, prior)

    def reliability(self) -> dict[str, float]:
        return {} if self.fit is None else self.fit.reliability()


def crowd_labels(criterion: str, examples_by_user: dict[str, list[TrainingExample]],
                 prior: Prior | None = None,
                 gold: dict[str, list[GoldAnswer]] | None = None,
                 ) -> tuple[CrowdLabels, dict[str, int]]:
    """Every user's judgments of ``criterion`` as crowd labels on distinct answers, and
    their answers to gold checks of it."""
    rows: dict[tuple, int] = {}
    features: list[np.ndarray] = []
    items, raters, labels, used = [], [], [], {}
    gold = gold or {}
    user_ids = sorted(set(examples_by_user) | set(gold))

    def item(key: tuple, row: np.ndarray) -> int:
        if key not in rows:
            rows[key] = len(features)
            features.append(row)
        return rows[key]

    for rater, user_id in enumerate(user_ids):
        for example in examples_by_user.get(user_id, ()):
            if example.criterion != criterion:
                continue
            for key, row, fine in _verdicts(example):
                items.append(item(key, row))
                raters.append(rater)
                labels.append(fine)
                used[user_id] = used.get(user_id, 0) + 1
    matrix = (torch.from_numpy(np.stack(features)).float() if features
              else torch.zeros(0, 0))
    crowd = CrowdLabels(
        features=matrix, item=torch.tensor(items, dtype=torch.int64),
        rater=torch.tensor(raters, dtype=torch.int64),
        label=torch.tensor(labels, dtype=torch.float32), rater_ids=user_ids,
        prior_logits=prior(matrix) if prior is not None and features else None,
        **_gold_labels(criterion, user_ids, gold),
    )
    return crowd, used


def _gold_labels(criterion: str, user_ids: list[str],
                 gold: dict[str, list[GoldAnswer]]) -> dict[str, torch.Tensor]:
    answers = [(rater, answer) for rater, user_id in enumerate(user_ids)
               for answer in gold.get(user_id, ()) if answer.criterion == criterion]
    return {
        "gold_rater": torch.tensor([r for r, _ in answers], dtype=torch.int64),
        "gold_label": torch.tensor([float(a.said_fine) for _, a in answers]),
        "gold_truth": torch.tensor([float(a.fine) for _, a in answers]),
    }


def _verdicts(example: TrainingExample) -> Iterable[tuple[tuple, np.ndarray, float]]:
    """(answer key, its features, 1.0 fine / 0.0 not) said by one example."""
    answer = (example.completion_id, example.choice)
    if example.kind == "thumbs":
        yield answer, example.features[example.choice], float(example.label)
    elif example.kind == "score":
        yield answer, example.features[example.choice], float(example.score >= FINE_FROM_SCORE)
    elif example.kind == "correction":
        written, corrected = example.ranking
        yield answer, example.features[corrected], 0.0
        yield (example.completion_id, "correction", example.event_id), example.features[written], 1.0


def fit_shared_heads(examples_by_user: dict[str, list[TrainingExample]],
                     priors: dict[str, Prior] | None = None,
                     config: CrowdConfig | None = None,
                     gold: dict[str, list[GoldAnswer]] | None = None) -> dict[str, SharedHead]:
    """One head per shared criterion, from everyone's judgments of it (and everyone's
    answers to gold checks of it, which weigh the raters, not the head).

    Fitted twice: the second time each rater's reliability on a criterion starts from
    what the first fit found on the others (``cross_criterion_priors``) rather than
    from the same prior for everyone."""
    config = config or CrowdConfig()
    crowds = {criterion: crowd_labels(criterion, examples_by_user,
                                      (priors or {}).get(criterion), gold)
              for criterion in SHARED_CRITERIA}
    fits = {criterion: _fit(crowd, config) for criterion, (crowd, _) in crowds.items()}
    if config.weight_raters and sum(fit is not None for fit in fits.values()) > 1:
        starts = cross_criterion_priors(fits)
        fits = {criterion: _fit(replace(crowd, rater_prior=torch.tensor(
                    [starts[criterion].get(r, _prior_mean(config)) for r in crowd.rater_ids])),
                    config)
                for criterion, (crowd, _) in crowds.items()}
    heads = {}
    for criterion, (crowd, used) in crowds.items():
        checks = Counter(crowd.rater_ids[r] for r in crowd.gold_rater.tolist())
        heads[criterion] = SharedHead(criterion, fits[criterion], (priors or {}).get(criterion),
                                      used, crowd.features if len(crowd.label) else None,
                                      dict(checks))
    return heads


def cross_criterion_priors(fits: dict[str, CrowdFit | None]) -> dict[str, dict[str, float]]:
    """Per criterion, each rater's prior mean reliability: their mean reliability on the
    other criteria, no lower than chance.

    Why: a rater judges a criterion only a few times (a user of a tailor demo answered
    2 myths and 3 honesty checks in 60 judgments), and a coin that happens to be right
    4 times of 4 looks as careful as anyone under one prior for all: the rater who clicks
    at random came out more reliable on honesty than an ordinary user in three runs of
    four. How they judged harm says something about how they judge truth. In five runs
    with it every flawed rater ranked below every ordinary one (README, runs AC-AG); on
    their final judgments one prior for all put the poor rater above an ordinary rater
    again in one of four. No lower than chance: an adversarial rater's harm judgments
    say they do not care, not that their fact checks are upside down (which would ignore
    those too, ``clamp_adversarial``)."""
    by_criterion = {c: fit.reliability() for c, fit in fits.items() if fit is not None}
    starts: dict[str, dict[str, float]] = {}
    for criterion in fits:
        others = [r for c, r in by_criterion.items() if c != criterion]
        raters = {rater for reliability in others for rater in reliability}
        starts[criterion] = {
            rater: max(0.5, sum(r[rater] for r in others if rater in r)
                       / sum(rater in r for r in others))
            for rater in raters}
    return starts


def _prior_mean(config: CrowdConfig) -> float:
    return config.prior_right / (config.prior_right + config.prior_wrong)


def _fit(crowd: CrowdLabels, config: CrowdConfig) -> CrowdFit | None:
    return fit_crowd(crowd, config) if len(crowd.label) else None
