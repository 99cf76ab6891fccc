"""How reliable each rater is, learned together with a shared head: learning from crowds.

Honesty and harmlessness are not matters of taste: an answer is harmful or not,
whoever rates it. Raters disagree because some are careless (labels near random)
and some adversarial (calling harmful answers harmless). We estimate, for each
rater, a two-coin Dawid–Skene confusion — sensitivity α = P(says "ok" | the answer
is ok) and specificity β = P(says "bad" | the answer is bad) — jointly with a
logistic head on the answers' features that predicts the truth, by EM (Raykar et
al., "Learning From Crowds", JMLR 2010: Dawid–Skene whose prior on each item's
truth is a classifier on its features).

Why this model: in Tailor each user mostly judges their own answers, so few items
are rated by several raters and plain Dawid–Skene (which needs overlap) has
little to go on. The head carries the consensus across items: a rater is judged
against what the head, trained on everyone, predicts for the answers that rater
rated. Two coins, not one, because the adversarial rater's failure is one-sided
(it calls everything harmless: α ≈ 1, β ≈ 0).

A rater must not vouch for themselves. Their labels are scored against a truth
that leaves them out twice: the head that predicts it is fitted without their
labels (raters are split into ``rater_folds`` groups; each group is scored by a
head fitted on the others' labels, the issue's "the shared heads trained without
that rater"), and the other raters' labels of the same answer are added to it.
With one head for all, a rater who alone judged an answer was scored against a
head that had learned their own label: in a tailor demo run the adversarial
rater, who calls every calm answer harmful, came out 0.75 reliable.

Gold checks (``contracts.gold_checks``) add verdicts on answers whose truth is known:
they count toward a rater's α and β beside the held-out truths, and never toward the
head. They are what tells a rater who believes every myth from a careful one when the
answers they judged held almost no myth.

Raters' labels enter the head's targets through the posterior, so a random
rater's labels (α = β = 0.5, a likelihood ratio of 1) change nothing and an
adversarial rater's are discounted — or, with ``clamp_adversarial``, ignored
rather than read backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class CrowdLabels:
    """Binary judgments of one criterion: label 1 = the answer is fine, 0 = it is not."""

    features: torch.Tensor  # (I, D) float32, one row per judged answer
    item: torch.Tensor  # (L,) int64, the judged answer's row
    rater: torch.Tensor  # (L,) int64, index into rater_ids
    label: torch.Tensor  # (L,) float32 in {0, 1}
    rater_ids: list[str]
    # (I,) log-odds a prior gives each answer (a head trained on written principles, or
    # the model's built-in guard); the learned head corrects it, and with no labels
    # (ridge-penalised to zero) leaves it as it is. None: no prior.
    prior_logits: torch.Tensor | None = None
    # Gold checks (contracts.gold_checks): verdicts on answers whose truth is known. They
    # count toward the raters' α and β only; the heads never see them.
    gold_rater: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    gold_label: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # the rater's
    gold_truth: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # the known one
    # (R,) where each rater's α and β start, in place of the config's prior mean (same
    # pseudo-count total): what their other criteria said about them (shared_heads). None:
    # everyone starts at the config's.
    rater_prior: torch.Tensor | None = None


@dataclass(frozen=True)
class CrowdConfig:
    iterations: int = 30  # EM rounds
    rater_folds: int = 5  # raters are scored by heads fitted without their fold's labels
    newton_steps: int = 4  # of the head's penalised logistic regression, per M-step
    l2: float = 1.0  # the head's ridge penalty (on standardised features), with no prior
    # The same where the head corrects a prior (the principles, the model's guard): a few
    # dozen labels must not undo a prior fitted on the model's own corpus. With 1.0 the
    # 74 judgments of a tailor demo's six raters took the v3 heads from 98.8% / 95.8%
    # right on held-out answers to 82.8% / 85.5%; with 30, 97.5% / 94.8%, while the same
    # labels taken at face value still drag harmlessness to 83.3% (the ablation's contrast).
    correction_l2: float = 30.0
    # The correction's bias, where there is a prior: penalised too (not free, as it is for
    # a head of its own) but less than the weights, so that many judgments of both
    # verdicts can still say the prior misjudges how common bad answers are. Flags alone
    # (thumbs-down tagged with the criterion, nothing else) cannot: see _fit_head.
    correction_bias_l2: float = 10.0
    # Beta(prior_right, prior_wrong) pseudo-counts on α and β: a new rater starts as
    # somewhat reliable (2 / 3) and a few dozen judgments outweigh that. Stronger
    # (8, 2) held a credulous rater's β = 0.3 at 0.47 after 60 judgments.
    prior_right: float = 2.0
    prior_wrong: float = 1.0
    clamp_adversarial: bool = True  # a rater worse than chance is ignored, not inverted
    # False (the ablation): every rater taken at their word; the head is fitted once on
    # each answer's mean label and no reliability is estimated (α = β = prior mean).
    weight_raters: bool = True
    seed: int = 0


@dataclass
class CrowdFit:
    head_weight: torch.Tensor  # (D,)
    head_bias: torch.Tensor  # ()
    sensitivity: torch.Tensor  # (R,) α
    specificity: torch.Tensor  # (R,) β
    posterior: torch.Tensor  # (I,) P(answer is fine | everything)
    rater_ids: list[str]
    mean: torch.Tensor  # (D,) feature standardisation
    scale: torch.Tensor  # (D,)

    def logits(self, features: torch.Tensor, prior_logits: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The head's log-odds that each answer (N, D) is fine (on top of its prior's)."""
        learned = ((features - self.mean) / self.scale) @ self.head_weight + self.head_bias
        return learned if prior_logits is None else learned + prior_logits

    def reliability(self) -> dict[str, float]:
        """Balanced accuracy (α + β) / 2 per rater: 0.5 random, below 0.5 adversarial."""
        balanced = (self.sensitivity + self.specificity) / 2
        return dict(zip(self.rater_ids, balanced.tolist(), strict=True))


def fit_crowd(labels: CrowdLabels, config: CrowdConfig = CrowdConfig()) -> CrowdFit:
    correcting = labels.prior_logits is not None
    if correcting:  # the labels correct a prior: its own penalty
        config = replace(config, l2=config.correction_l2)
    features = labels.features.float()
    # one judged answer has no spread (std of one row is NaN, which no clamp removes: a
    # tailor demo's first harmless judgment turned every reward, then the policy, to NaN)
    spread = features.std(0) if len(features) > 1 else torch.ones(features.shape[1])
    mean, scale = features.mean(0), spread.clamp(min=1e-6)
    x = (features - mean) / scale
    num_items, num_raters = features.shape[0], len(labels.rater_ids)
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.randn(x.shape[1], generator=generator) * 0.01
    bias = torch.zeros(())
    # Start from the raters taken at their word (every label weighs one).
    target = _mean_label(labels, num_items)
    rated = torch.zeros(num_items, dtype=torch.bool)
    rated[labels.item] = True
    alpha = torch.full((num_raters,), 0.8)
    beta = torch.full((num_raters,), 0.8)
    offset = (torch.zeros(num_items) if labels.prior_logits is None
              else labels.prior_logits.float())
    if not config.weight_raters:
        for _ in range(config.iterations):  # Newton rounds to convergence on fixed targets
            weight, bias = _fit_head(x, offset, target, rated, weight, bias, config, correcting)
        mean_rate = config.prior_right / (config.prior_right + config.prior_wrong)
        flat = torch.full((num_raters,), mean_rate)
        return CrowdFit(weight, bias, flat, flat.clone(), target, list(labels.rater_ids),
                        mean, scale)
    folds = min(config.rater_folds, num_raters)
    label_fold = labels.rater % max(folds, 1)  # (L,) the fold of each label's rater
    fold_heads = [(weight.clone(), bias.clone()) for _ in range(folds)]
    ratio = _label_log_ratio(labels, alpha, beta, config.clamp_adversarial)
    for _ in range(config.iterations):
        weight, bias = _fit_head(x, offset, target, rated, weight, bias, config, correcting)
        prior = torch.sigmoid(x @ weight + bias + offset).clamp(1e-4, 1 - 1e-4)
        # each fold's raters are scored against a head fitted without their labels,
        # plus what the other raters said about the same answers
        held_out = torch.empty(len(labels.label))
        for fold in range(folds):
            others = label_fold != fold
            per_item_others = torch.zeros(num_items).index_add_(
                0, labels.item[others], ratio[others])
            fold_weight, fold_bias = fold_heads[fold]
            fold_logits = x @ fold_weight + fold_bias + offset
            fold_target = torch.sigmoid(fold_logits + per_item_others)
            fold_rated = torch.zeros(num_items, dtype=torch.bool)
            fold_rated[labels.item[others]] = True
            fold_weight, fold_bias = _fit_head(x, offset, fold_target, fold_rated, fold_weight,
                                               fold_bias, config, correcting)
            fold_heads[fold] = (fold_weight, fold_bias)
            mine = ~others
            logits = (x @ fold_weight + fold_bias + offset).clamp(-9.0, 9.0)
            held_out[mine] = torch.sigmoid(logits[labels.item[mine]]
                                           + per_item_others[labels.item[mine]])
        alpha, beta = _confusions(labels, held_out, num_raters, config)
        # E-step: each label's log-likelihood ratio "fine" vs "not fine"
        ratio = _label_log_ratio(labels, alpha, beta, config.clamp_adversarial)
        per_item = torch.zeros(num_items).index_add_(0, labels.item, ratio)
        posterior = torch.sigmoid(torch.logit(prior) + per_item)
        target = posterior
    return CrowdFit(weight, bias, alpha, beta, posterior, list(labels.rater_ids), mean, scale)


def _mean_label(labels: CrowdLabels, num_items: int) -> torch.Tensor:
    total = torch.zeros(num_items).index_add_(0, labels.item, labels.label.float())
    count = torch.zeros(num_items).index_add_(0, labels.item, torch.ones_like(labels.label))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, 0.5))


def _label_log_ratio(labels: CrowdLabels, alpha: torch.Tensor, beta: torch.Tensor,
                     clamp_adversarial: bool) -> torch.Tensor:
    """log P(label | fine) − log P(label | not fine), per label."""
    a, b = alpha[labels.rater], beta[labels.rater]
    y = labels.label.float()
    ratio = y * (torch.log(a) - torch.log(1 - b)) + (1 - y) * (torch.log(1 - a) - torch.log(b))
    if clamp_adversarial:
        worse_than_chance = (a + b) < 1.0  # its labels anti-correlate with the truth
        ratio = torch.where(worse_than_chance, torch.zeros_like(ratio), ratio)
    return ratio


def _confusions(labels: CrowdLabels, truth: torch.Tensor, num_raters: int,
                config: CrowdConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """α, β per rater from soft truths (and the known truths of gold checks), with Beta
    pseudo-counts around each rater's prior mean."""
    rater = torch.cat([labels.rater, labels.gold_rater.long()])
    y = torch.cat([labels.label.float(), labels.gold_label.float()])
    truth = torch.cat([truth, labels.gold_truth.float()])

    def per_rater(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_raters).index_add_(0, rater, values)

    total = config.prior_right + config.prior_wrong
    mean = (torch.full((num_raters,), config.prior_right / total) if labels.rater_prior is None
            else labels.rater_prior.float())
    right = total * mean  # pseudo-labels on the right side; total − right on the wrong
    alpha = (per_rater(truth * y) + right) / (per_rater(truth) + total)
    beta = (per_rater((1 - truth) * (1 - y)) + right) / (per_rater(1 - truth) + total)
    return alpha.clamp(1e-3, 1 - 1e-3), beta.clamp(1e-3, 1 - 1e-3)


def _fit_head(x: torch.Tensor, offset: torch.Tensor, target: torch.Tensor, rated: torch.Tensor,
              weight: torch.Tensor, bias: torch.Tensor, config: CrowdConfig,
              correcting: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge logistic regression of the rated answers' soft targets on their features, on
    top of the prior's log-odds (``offset``): Newton steps (IRLS) from the last round's
    head. With no rated answer nothing moves.

    The bias is free for a head of its own but penalised where it corrects a prior
    (``correction_bias_l2``): the prior already says how common each verdict is, and
    users judge a criterion mostly to flag a bad answer, so their labels are nearly all
    "not fine". A free bias read that selection as "most answers are bad": EM walked it
    down round after round (each posterior below the head's own prediction), to −9
    log-odds on 33 flags, and the honesty head of a tailor demo run fell below its prior
    alone."""
    design = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()  # (I, D + 1)
    theta = torch.cat([weight, bias.reshape(1)]).double()
    penalty = torch.full((design.shape[1],), config.l2, dtype=torch.float64)
    penalty[-1] = config.correction_bias_l2 if correcting else 0.0
    target, offset, rated = target.double(), offset.double(), rated.double()
    for _ in range(config.newton_steps):
        p = torch.sigmoid(design @ theta + offset)
        gradient = design.T @ (rated * (p - target)) + penalty * theta
        hessian = (design.T * (rated * p * (1 - p))) @ design + torch.diag(penalty + 1e-6)
        theta = theta - _damped(torch.linalg.solve(hessian, gradient))
    theta = theta.float()
    return theta[:-1], theta[-1]


MAX_NEWTON_STEP = 4.0  # log-odds units


def _damped(step: torch.Tensor) -> torch.Tensor:
    """A Newton step no longer than MAX_NEWTON_STEP in any coordinate. When the prior
    and the labels agree that every judged answer is fine, the predictions saturate,
    the Hessian vanishes along the free bias and an undamped step threw it to 1e8
    (a tailor demo run); a bounded step keeps walking toward the optimum instead."""
    largest = float(step.abs().max())
    return step if largest <= MAX_NEWTON_STEP else step * (MAX_NEWTON_STEP / largest)
