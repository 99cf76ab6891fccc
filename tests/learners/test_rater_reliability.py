"""Rater reliability learned with a shared head (learning from crowds), on synthetic raters
whose accuracies are known."""

from __future__ import annotations

import torch

from learners.rater_reliability import CrowdConfig, CrowdLabels, fit_crowd

DIM = 8
# (kind, sensitivity α = P(says fine | fine), specificity β = P(says bad | bad), how many)
RATERS = [("ordinary", 0.9, 0.9, 10), ("poor", 0.5, 0.5, 4), ("adversarial", 0.95, 0.05, 3),
          ("credulous", 0.9, 0.3, 3)]


def synthetic_crowd(seed: int, per_rater: int = 60, overlap: float = 0.1):
    """Answers whose truth is a linear function of their features; each rater judges its own
    answers (as a Tailor user does), and a few judged by someone else too."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(DIM, generator=generator)
    kinds, alphas, betas = [], [], []
    for kind, alpha, beta, count in RATERS:
        kinds += [kind] * count
        alphas += [alpha] * count
        betas += [beta] * count
    num_raters = len(kinds)
    num_items = num_raters * per_rater
    features = torch.randn(num_items, DIM, generator=generator)
    truth = (features @ direction > -0.5).float()  # ~70% of answers are fine
    items, raters = [], []
    for rater in range(num_raters):
        own = torch.arange(rater * per_rater, (rater + 1) * per_rater)
        others = torch.randint(0, num_items, (int(overlap * per_rater),), generator=generator)
        for item in torch.cat([own, others]).tolist():
            items.append(item)
            raters.append(rater)
    item, rater = torch.tensor(items), torch.tensor(raters)
    alpha, beta = torch.tensor(alphas)[rater], torch.tensor(betas)[rater]
    says_fine = torch.where(truth[item] == 1, alpha, 1 - beta)
    label = (torch.rand(len(items), generator=generator) < says_fine).float()
    crowd = CrowdLabels(features, item, rater, label, [f"{k}-{i}" for i, k in enumerate(kinds)])
    return crowd, truth, direction, kinds, torch.tensor(alphas), torch.tensor(betas)


def test_known_rater_accuracies_are_recovered_and_bad_raters_rank_below_every_ordinary_one():
    crowd, _, _, kinds, alphas, betas = synthetic_crowd(seed=0)
    fit = fit_crowd(crowd)
    for kind in {k for k, *_ in RATERS}:
        mine = torch.tensor([k == kind for k in kinds])
        assert abs(fit.sensitivity[mine].mean() - alphas[mine].mean()) < 0.1, kind
        # Scored against heads fitted without them, raters are checked against softer
        # truths than an in-sample head's: the estimates lean toward 0.5 (ordinary β
        # 0.77 for 0.9 here); the ranking below is what the learners rely on.
        assert abs(fit.specificity[mine].mean() - betas[mine].mean()) < 0.15, kind
    reliability = list(fit.reliability().values())
    ordinary = [r for r, k in zip(reliability, kinds, strict=True) if k == "ordinary"]
    others = [r for r, k in zip(reliability, kinds, strict=True) if k != "ordinary"]
    assert max(others) < min(ordinary), (others, ordinary)


def test_weighting_by_reliability_makes_the_shared_head_more_accurate_than_taking_labels_at_face_value():
    crowd, _, direction, *_ = synthetic_crowd(seed=1)
    held_out = torch.randn(2000, DIM, generator=torch.Generator().manual_seed(7))
    truth = held_out @ direction > -0.5

    def accuracy(fit) -> float:
        return float(((fit.logits(held_out) > 0) == truth).float().mean())

    weighted = accuracy(fit_crowd(crowd))
    face_value = accuracy(fit_crowd(crowd, CrowdConfig(iterations=1)))  # the head on raw labels
    assert weighted >= face_value + 0.03, (weighted, face_value)
    assert weighted >= 0.9, weighted


def test_a_rater_who_alone_rated_their_answers_cannot_vouch_for_themselves():
    # One adversarial rater, no overlap at all: only the head (trained on everyone) can tell.
    crowd, *_ = synthetic_crowd(seed=2, overlap=0.0)
    fit = fit_crowd(crowd)
    adversarial = [r for name, r in fit.reliability().items() if name.startswith("adversarial")]
    assert max(adversarial) < 0.6, adversarial


def test_a_prior_stands_where_there_are_no_labels_and_is_corrected_where_there_are():
    crowd, _, direction, *_ = synthetic_crowd(seed=3)
    held_out = torch.randn(2000, DIM, generator=torch.Generator().manual_seed(7))
    truth = held_out @ direction > -0.5
    # A rough prior, as written principles give: the right direction, too weak and biased.
    def prior(features: torch.Tensor) -> torch.Tensor:
        return 0.3 * (features @ direction) - 0.5

    unlabelled = CrowdLabels(crowd.features, crowd.item[:0], crowd.rater[:0], crowd.label[:0],
                             crowd.rater_ids, prior_logits=prior(crowd.features))
    alone = fit_crowd(unlabelled)
    torch.testing.assert_close(alone.logits(held_out, prior(held_out)), prior(held_out),
                               atol=0.05, rtol=0.0)
    labelled = CrowdLabels(crowd.features, crowd.item, crowd.rater, crowd.label, crowd.rater_ids,
                           prior_logits=prior(crowd.features))
    corrected = fit_crowd(labelled).logits(held_out, prior(held_out))
    before = float(((prior(held_out) > 0) == truth).float().mean())
    after = float(((corrected > 0) == truth).float().mean())
    assert after >= max(before + 0.05, 0.9), (before, after)


def test_one_judged_answer_fits_a_finite_head():
    # the first harmless judgment of a new service: one answer, one rater (its features have
    # no spread; a NaN standardisation once made every PPO reward NaN)
    features = torch.randn(1, DIM, generator=torch.Generator().manual_seed(1))
    crowd = CrowdLabels(features, torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]),
                        ["first"], prior_logits=torch.tensor([1.0]))
    fit = fit_crowd(crowd)
    logits = fit.logits(torch.randn(5, DIM), torch.zeros(5))
    assert torch.isfinite(logits).all() and torch.isfinite(fit.posterior).all()


def test_a_few_hundred_labels_do_not_undo_a_sound_prior():
    # As in Tailor: many feature dimensions, 300 labels of six raters (two adversarial,
    # calling everything fine), and a prior fitted on the model's own corpus (here exact).
    generator = torch.Generator().manual_seed(0)
    dim = 64
    direction = torch.randn(dim, generator=generator)
    features = torch.randn(300, dim, generator=generator)
    truth = (features @ direction > -0.5).float()
    rater = torch.arange(300) // 50
    label = torch.where(torch.rand(300, generator=generator) < 0.1, 1 - truth, truth)
    label = torch.where(rater >= 4, torch.ones(300), label)

    def prior(rows: torch.Tensor) -> torch.Tensor:
        return 3.0 * (rows @ direction + 0.5) / direction.norm()

    labelled = CrowdLabels(features, torch.arange(300), rater, label,
                           [str(r) for r in range(6)], prior_logits=prior(features))
    held_out = torch.randn(3000, dim, generator=generator)
    held_truth = held_out @ direction > -0.5

    def accuracy(config: CrowdConfig) -> float:
        logits = fit_crowd(labelled, config).logits(held_out, prior(held_out))
        return float(((logits > 0) == held_truth).float().mean())

    corrected, loosely = accuracy(CrowdConfig()), accuracy(CrowdConfig(correction_l2=1.0))
    assert corrected >= 0.93, corrected  # measured 0.96; the prior alone is right every time
    assert corrected >= loosely + 0.05, (corrected, loosely)  # loosely: measured 0.86


def test_flags_of_bad_answers_alone_do_not_tip_a_sound_prior():
    # Users judge honesty mostly to flag a falsehood: 30 thumbs-down on false answers and 3
    # mistaken ones, no thumbs-up. That says which answers are false, not that most are;
    # the correction's bias once walked to -9 log-odds and called 57% of answers false.
    generator = torch.Generator().manual_seed(0)
    dim = 64
    direction = torch.randn(dim, generator=generator)
    features = torch.randn(3000, dim, generator=generator)
    truth = features @ direction > -1.5  # ~7% of answers are false

    def prior(rows: torch.Tensor) -> torch.Tensor:
        return 1.5 * (rows @ direction + 1.5) / direction.norm()

    flagged = torch.cat([torch.nonzero(~truth).flatten()[:30], torch.nonzero(truth).flatten()[:3]])
    crowd = CrowdLabels(features[flagged], torch.arange(33), torch.arange(33) % 6, torch.zeros(33),
                        [str(r) for r in range(6)], prior_logits=prior(features[flagged]))
    held_out = torch.randn(3000, dim, generator=generator)
    held_truth = held_out @ direction > -1.5
    logits = fit_crowd(crowd).logits(held_out, prior(held_out))
    accuracy = float(((logits > 0) == held_truth).float().mean())
    assert accuracy >= 0.9, accuracy  # measured 0.937 (the prior alone: 1.0); with a free bias 0.43


def _rarely_bad_crowd(seed: int, gold_per_rater: int) -> tuple[CrowdLabels, list[str]]:
    """Raters who judge their own answers, of which few are bad (a safe assistant's), and
    answer ``gold_per_rater`` gold checks, half of them bad answers."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(DIM, generator=generator)
    kinds = ["ordinary"] * 8 + ["credulous"] * 2
    sensitivity = {"ordinary": 0.9, "credulous": 0.9}
    specificity = {"ordinary": 0.9, "credulous": 0.0}  # believes every myth
    per_rater = 30
    features = torch.randn(len(kinds) * per_rater, DIM, generator=generator)
    truth = (features @ direction > -2.6).float()  # ~99% of answers are fine
    item = torch.arange(len(features))
    rater = item // per_rater

    def says_fine(truths: torch.Tensor, raters: torch.Tensor) -> torch.Tensor:
        alpha = torch.tensor([sensitivity[kinds[r]] for r in raters.tolist()])
        beta = torch.tensor([specificity[kinds[r]] for r in raters.tolist()])
        chance = torch.where(truths == 1, alpha, 1 - beta)
        return (torch.rand(len(truths), generator=generator) < chance).float()

    gold_rater = torch.arange(len(kinds)).repeat_interleave(gold_per_rater)
    gold_truth = torch.arange(gold_per_rater).remainder(2).float().repeat(len(kinds))
    crowd = CrowdLabels(features, item, rater, says_fine(truth, rater),
                        [f"{k}-{i}" for i, k in enumerate(kinds)],
                        gold_rater=gold_rater, gold_label=says_fine(gold_truth, gold_rater),
                        gold_truth=gold_truth)
    return crowd, kinds


def test_gold_checks_tell_a_credulous_rater_from_careful_ones_when_few_of_their_answers_were_bad():
    def gaps(gold_per_rater: int) -> list[float]:
        """Per seed, how far below the least reliable careful rater the most reliable
        credulous one is estimated."""
        found = []
        for seed in range(3):
            crowd, kinds = _rarely_bad_crowd(seed, gold_per_rater)
            reliability = list(fit_crowd(crowd).reliability().values())
            careful = [r for r, k in zip(reliability, kinds, strict=True) if k == "ordinary"]
            credulous = [r for r, k in zip(reliability, kinds, strict=True) if k == "credulous"]
            found.append(min(careful) - max(credulous))
        return found

    # the same raters and labels of their own answers, with and without six checks each
    alone, with_gold = gaps(gold_per_rater=0), gaps(gold_per_rater=6)
    assert min(alone) < 0.05, alone  # in some crowds their own answers cannot tell them apart
    assert min(with_gold) > 0.1, with_gold
    assert sum(with_gold) / 3 > sum(alone) / 3 + 0.05, (alone, with_gold)
