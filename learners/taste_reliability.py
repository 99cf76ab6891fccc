"""How much each user's judgments may teach the population reward: rater reliability for taste.

The population reward (``learners.reward_model``: r_pop) is learned from everyone, and
every user's reward starts from it. A rater who clicks at random, or one who rewards
what everyone else turns down, pulls it toward noise or toward their own aims for
every user. Taste has no ground truth, so their reliability is measured as for the
shared heads (``learners.rater_reliability``): a two-coin Dawid–Skene model learned
with a logistic head on the texts' features, each rater scored against the consensus
of everyone else (heads fitted without their fold, plus the other raters' votes on
the same texts), on their thumbs (a graded label counts as its share of an up).

Disagreeing with the crowd is not unreliable when it is taste: a user with a minority
taste agrees with the consensus less than most, and their own reward keeps it (the user
part is fitted on their judgments alone, at full weight, whatever this says). So the
weight only discounts raters the consensus tells apart from chance:

    weight = clip(J / J₀, 0, 1),  J = α + β − 1 (Youden's J: 0 for a coin, 1 perfect)

with J₀ the J of a new rater under the reliability prior (2/3, 2/3: J₀ = 1/3). Anyone
whose agreement with the crowd is at least a new rater's (J ≥ J₀) keeps full
weight; a rater against the crowd weighs nothing in r_pop, and one at chance little (J
from 60 thumbs has a standard deviation of ~0.13: a coin's weight lands anywhere in 0 to
0.8, from 120 thumbs 0 to 0.6; tests/learners/test_taste_reliability.py). A user with
no thumbs (rankings only) keeps full weight: rankings say nothing absolute to score
against.
"""

from __future__ import annotations

import torch

from learners.rater_reliability import CrowdConfig, CrowdLabels, fit_crowd
from learners.reward_data import FeedbackSet


def taste_labels(data: FeedbackSet) -> CrowdLabels:
    """The thumbs of ``data`` as crowd labels: one item per judged text, one rater per user."""
    used, item = torch.unique(data.thumb_item, return_inverse=True)
    return CrowdLabels(features=data.features[used].float(), item=item,
                       rater=data.thumb_user.long(), label=data.thumb_label.float(),
                       rater_ids=list(data.user_ids))


# Ten EM rounds, not the shared heads' thirty: weights, not a head, are wanted, and they
# settle within ten on synthetic voters (tests); with thirty a Polis evaluation took 234 s
# against 61 s unweighted.
TASTE_CROWD = CrowdConfig(iterations=10)


def taste_weights(data: FeedbackSet, enabled: bool = True) -> torch.Tensor:
    """(U,) each user's weight in the population reward, indexed like ``data.user_ids``;
    all ones when not ``enabled`` (the ablation: everyone at their word)."""
    weights = torch.ones(len(data.user_ids))
    if data.thumb_label.numel() == 0 or not enabled:
        return weights
    config = TASTE_CROWD
    fit = fit_crowd(taste_labels(data), config)
    prior_rate = config.prior_right / (config.prior_right + config.prior_wrong)
    new_rater_j = 2 * prior_rate - 1
    youden = fit.sensitivity + fit.specificity - 1
    thumbs_users = torch.unique(data.thumb_user)
    weights[thumbs_users] = (youden[thumbs_users] / new_rater_j).clamp(0.0, 1.0)
    return weights
