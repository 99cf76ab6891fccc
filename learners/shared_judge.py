"""The shared harmlessness and honesty heads as a learner uses them.

Every user's PPO reward is their own helpfulness reward minus a fixed penalty for
each shared criterion: ``strength × (P − τ) / (1 − τ)`` where ``P``, the probability that
the answer breaks it, is above the threshold ``τ``, and nothing below it. ``P`` is from
the shared head (``learners.shared_heads``), which starts from the written principles
(``learners.principles``) and is corrected by everyone's judgments of that criterion,
each rater weighted by their estimated reliability. The gate compares the rate of
held-out answers the heads judge to break each criterion (``breaches``; ``learners.gate``).

Why a threshold: the heads are linear in the answer's features, so an everyday answer
gets a small probability that differs by style — on the v3 model about 0.05 for concise
answers and 0.01 for formal ones. Times a strength of 8 that was 0.4 reward units
against concise answers, a taste no user voted for, and a bias toward formal ones;
below ``τ`` no style pays anything, above it the penalty rises to the full strength.
On red-team prompts (requests for harm, provocations, myths) the threshold is its own,
``τ_red`` (0 by default): there the probability is no style leaning but the question
the prompt asks, and under ``τ`` a refusal with a joke step appended (P 0.2-0.4) paid
no more than a clean one (P 0.0-0.1), so PPO on taste drifted into such blends.

Fixed weights rather than Safe RLHF's per-user Lagrange multipliers: a multiplier is
learned from the user's own rollouts, so it is state that the user's data drives, and
with a few PPO iterations per update it would not settle before the update is
published. A fixed weight (``TAILOR_LEARNER_SHARED_HEAD_STRENGTH``; the settings say
why it has its value) is one no user's votes can change. The heads themselves are
shared: a user moves them only as one rater among all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
import torch
from safetensors.torch import save as save_tensors

from contracts.gold_checks import GoldAnswer
from contracts.keys import SHARED_HEADS_KEY, SHARED_HEADS_WEIGHTS_KEY, user_key
from contracts.principles_file import load_principles
from contracts.records import SHARED_CRITERIA
from learners.guard import Guard
from learners.principles import PriorHead, file_digest, principle_priors
from learners.rater_reliability import CrowdConfig
from learners.shared_heads import SharedHead, fit_shared_heads
from learners.training_data import TrainingExample

log = logging.getLogger(__name__)
REPORTED_PROMPTS_KEPT = 512  # distinct, the newest

# (prompt text, answer text) -> the base model's pooled features (D,) of the answer
TextFeatures = Callable[[str, str], np.ndarray]


class SharedJudge:
    def __init__(self, principles_path: Path | None, text_features: TextFeatures,
                 strength: float, crowd: CrowdConfig | None = None,
                 guards: dict[str, Guard] | None = None, threshold: float = 0.0,
                 red_team_threshold: float = 0.0) -> None:
        self.principles_path = principles_path
        # A model's built-in guards, fitted on labelled answers of its own corpus, are
        # the priors of their criteria where they exist (learners.guard): on the v2
        # model a few written answers could not tell its dismissive style from bullet
        # lists (P(harmful) 0.67 vs 0.45), which a strong penalty would have taught
        # every bullet lover; on v3 they called 6% of everyday concise answers false.
        self.guards = guards or {}
        self.text_features = text_features
        self.strength = strength
        self.threshold = threshold
        self.red_team_threshold = red_team_threshold
        self.crowd = crowd or CrowdConfig()
        self.priors: dict[str, PriorHead] = {}
        # The principles' example prompts: requests that invite harm or a myth, which a
        # user's own prompts may never contain (red-team prompts for every user's PPO).
        self.red_team_prompts: list[str] = []
        # The principles' everyday prompts, which invite no breach (learners.safety_start).
        self.everyday_prompts: list[str] = []
        # The prompts of everyone's harmless/honest judgments (token ids), newest last: the
        # requests users found worth judging for harm or truth, a red-team set that grows
        # with the service and follows what its users really ask.
        self.reported_prompts: list[list[int]] = []
        self._digest: str | None = None
        self._fitted_on: tuple | None = None  # what refit last fitted the heads from
        self.heads: dict[str, SharedHead] = {}
        if principles_path is None:
            log.warning("no principles file: the shared heads start with no prior")
        self._load_priors()
        self.heads = fit_shared_heads({}, self.priors, self.crowd)

    def _load_priors(self) -> None:
        """Fit the priors from the principles file when its content changed; a criterion's
        built-in guard, if any, is its prior either way."""
        digest = None if self.principles_path is None else file_digest(self.principles_path)
        if self.priors and digest == self._digest:
            return
        self.priors, self.red_team_prompts, self.everyday_prompts = {}, [], []
        if self.principles_path is not None:
            principles = load_principles(self.principles_path)
            self.priors = principle_priors(principles, self.text_features)
            self.red_team_prompts = list(dict.fromkeys(
                [example.prompt for p in principles.principles for example in p.examples]
                + principles.red_team))
            self.everyday_prompts = list(dict.fromkeys(principles.everyday))
        for criterion, guard in self.guards.items():  # fine log-odds = −(breaking log-odds)
            self.priors[criterion] = PriorHead(criterion, -guard.weight, -guard.bias,
                                               examples=guard.answers)
        self._digest = digest
        if self.priors:
            log.info("shared heads' priors (%s; principles: %s)", ", ".join(
                f"{c}: {p.examples} answers" for c, p in self.priors.items()),
                self.principles_path)

    def refit(self, examples_by_user: dict[str, list[TrainingExample]],
              gold: dict[str, list[GoldAnswer]] | None = None) -> bool:
        """The heads from everyone's judgments and answers to gold checks, on the (possibly
        rewritten) principles; False, and nothing refitted, when none of these changed
        since the last fit (a refine, or an update on taste judgments alone: the fit of a
        few hundred judgments takes about a second on one thread)."""
        self._load_priors()
        judged = {user_id: [e for e in examples if e.criterion in SHARED_CRITERIA]
                  for user_id, examples in examples_by_user.items()}
        # a user's judgments only grow, or go all at once when they are forgotten; a gold
        # check answered again replaces the answer
        fitted_on = (self._digest,
                     frozenset((user_id, len(mine), mine[-1].accepted_at)
                               for user_id, mine in judged.items() if mine),
                     frozenset((user_id, frozenset(answers))
                               for user_id, answers in (gold or {}).items() if answers))
        if fitted_on == self._fitted_on:
            return False
        self.heads = fit_shared_heads(examples_by_user, self.priors, self.crowd, gold)
        self._fitted_on = fitted_on
        reported = sorted((e.accepted_at, tuple(e.prompt_token_ids))
                          for mine in judged.values() for e in mine)
        newest = list(dict.fromkeys(prompt for _, prompt in reversed(reported)))
        self.reported_prompts = [list(p) for p in reversed(newest[:REPORTED_PROMPTS_KEPT])]
        return True

    @torch.no_grad()
    def costs(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per shared criterion, the probability (N,) that each answer (N, D) breaks it.
        A head with neither a prior nor a judgment knows nothing and costs nothing."""
        return {criterion: torch.sigmoid(-head.fine_logits(features))
                for criterion, head in self.heads.items()
                if head.fit is not None or head.prior is not None}

    def breaches(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per shared criterion, how surely each answer (N, D) breaks it: 0 up to even odds,
        rising to 1 for a sure breach. Its mean is the held-out rate the gate compares: a
        count of answers judged to break the criterion, soft at the boundary. The mean
        probability itself (``costs``) carried the heads' style leanings into the gate:
        on everyday prompts, where nothing breaks a criterion, concise answers average a
        few points more P(harmful) than formal ones on the v3 model, and a busy
        professional's updates toward concise answers were refused as
        ``harmless_rate_rose`` three times in one run."""
        return {criterion: (cost - 0.5).clamp(min=0.0) / 0.5
                for criterion, cost in self.costs(features).items()}

    def surest_breach(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) how surely each answer breaks any shared criterion (``breaches``' largest)."""
        found = list(self.breaches(features).values())
        return torch.stack(found).amax(0) if found else torch.zeros(len(features))

    def penalty(self, features: torch.Tensor, red_team: torch.Tensor | bool = False
                ) -> torch.Tensor:
        """(N,) reward units taken off each answer: per criterion, none up to the
        threshold, then rising to ``strength`` for an answer surely breaking it. ``red_team``
        (a bool, or (N,) bools): the answers to red-team prompts, whose threshold is
        ``red_team_threshold``."""
        threshold = torch.where(torch.as_tensor(red_team), self.red_team_threshold,
                                self.threshold).float()
        above = ((cost - threshold).clamp(min=0.0) / (1.0 - threshold)
                 for cost in self.costs(features).values())
        return self.strength * sum(above, torch.zeros(len(features)))

    def linear_heads(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each head as one logistic layer on raw features, (weight (D,), bias ()): the
        prior's plus the learned correction, folded (both are linear in the features)."""
        heads = {}
        for criterion, head in self.heads.items():
            prior = self.priors.get(criterion)
            if head.fit is None and prior is None:
                continue
            weight = torch.zeros(0) if prior is None else prior.weight.clone()
            bias = torch.zeros(()) if prior is None else prior.bias.clone()
            if head.fit is not None:
                fit = head.fit
                folded = fit.head_weight / fit.scale  # w·(f − μ)/σ + b = (w/σ)·f + (b − w·μ/σ)
                weight = folded if prior is None else weight + folded
                bias = bias + fit.head_bias - (folded * fit.mean).sum()
            heads[criterion] = (weight.float(), bias.float())
        return heads

    def record(self, client: redis.Redis) -> None:
        """Each rater's reliability and judgments used (their user hash); the heads'
        numbers and the reliability distribution (for /metrics)."""
        stats: dict[str, str | float | int] = {}
        with client.pipeline() as pipe:
            for criterion, head in self.heads.items():
                reliability = head.reliability()
                for user_id in head.judgments_used.keys() | head.checks_used.keys():
                    fields: dict[str, float] = {
                        f"learner_shared_judgments_{criterion}": head.judgments_used.get(user_id, 0),
                        f"learner_gold_checks_{criterion}": head.checks_used.get(user_id, 0)}
                    if user_id in reliability:
                        fields[f"learner_reliability_{criterion}"] = reliability[user_id]
                    pipe.hset(user_key(user_id), mapping=fields)
                stats |= {
                    f"{criterion}_judgments": sum(head.judgments_used.values()),
                    f"{criterion}_raters": len(head.judgments_used),
                    f"{criterion}_prior_answers": (self.priors[criterion].examples
                                                   if criterion in self.priors else 0),
                    f"{criterion}_reliability": json.dumps(sorted(reliability.values())),
                }
                agreement = head_agreement(head)
                if agreement is not None:
                    stats[f"{criterion}_agreement"] = agreement
            tensors = {f"{criterion}.{part}": value.contiguous()
                       for criterion, pair in self.linear_heads().items()
                       for part, value in zip(("weight", "bias"), pair, strict=True)}
            if tensors:  # for whoever judges answers by them (tailor demo's accuracy check)
                pipe.set(SHARED_HEADS_WEIGHTS_KEY, save_tensors(tensors))
            if stats:
                pipe.hset(SHARED_HEADS_KEY, mapping=stats)
            pipe.execute()


def head_agreement(head: SharedHead) -> float | None:
    """How often the head's own verdict (without the judgments) agrees with the consensus
    on the answers it was judged on: a reading of the head's accuracy where no ground
    truth exists. None before any judgment."""
    fit = head.fit
    if fit is None or head.judged is None or len(fit.posterior) == 0:
        return None
    verdict = head.fine_logits(head.judged) > 0
    return float((verdict == (fit.posterior > 0.5)).float().mean())
