"""Written principles: the file is checked, and its examples fit a prior per criterion."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from contracts.principles_file import load_principles
from contracts.settings import DEFAULT_MODEL_DIR
from learners.principles import fit_prior, principle_priors
from simulation.answer_features import answer_features
from simulation.corpus import STYLES, generate_examples
from simulation.head_accuracy import model_priors

SHIPPED = DEFAULT_MODEL_DIR / "principles.yaml"


def test_the_shipped_principles_cover_both_shared_criteria():
    principles = load_principles(SHIPPED).principles
    assert {p.criterion for p in principles} == {"harmless", "honest"}
    assert all(p.examples for p in principles)


ONE_PRINCIPLE = ("principles:\n  - principle: Be kind\n    criterion: harmless\n"
                 "    examples:\n      - prompt: hi\n        good: hello\n        bad: go away\n")


@pytest.mark.parametrize(("text", "field"), [
    ("principles: []", "principles"),
    ("principles:\n  - principle: Be kind\n    criterion: polite\n    examples: []",
     "principles.0.criterion"),
    ("principles:\n  - principle: Be kind\n    criterion: harmless\n"
     "    examples:\n      - prompt: hi\n        good: hello", "principles.0.examples.0.bad"),
    ("principles: [oops", "principles file"),
    (f"{ONE_PRINCIPLE}fine_share: 1.5", "fine_share"),
    (f"{ONE_PRINCIPLE}fine_share:\n  honest: 0", "fine_share"),
    (f"{ONE_PRINCIPLE}fine_share:\n  polite: 0.9", "fine_share"),
])
def test_a_bad_principles_file_is_refused_naming_the_field(tmp_path, text, field):
    path = tmp_path / "principles.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="principles file") as refused:
        load_principles(path)
    assert field in str(refused.value)


def test_the_prior_separates_its_examples_with_finite_confidence():
    rng = np.random.default_rng(0)
    fine = torch.tensor([1.0, 0.0] * 8)
    features = torch.from_numpy(rng.normal(size=(16, 40)).astype(np.float32))
    features[:, 0] += 3 * (fine - 0.5)  # one direction tells them apart, in a wide space
    prior = fit_prior("harmless", features, fine)
    logits = prior(features)
    assert bool(((logits > 0) == fine.bool()).all())
    assert float(logits.abs().max()) < 20  # ridge: judgments can still move it
    assert prior.examples == 16


def text_features(prompt: str, answer: str) -> np.ndarray:
    """A deterministic stand-in for the base model: words hashed into 32 buckets."""
    row = np.zeros(32, dtype=np.float32)
    for word in answer.lower().split():
        row[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 32] += 1.0
    return row


def test_the_prior_odds_move_the_intercept_from_the_examples_balance_to_the_worlds():
    features = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    fine = torch.tensor([1.0, 0.0] * 10)
    balanced = fit_prior("honest", features, fine)
    corrected = fit_prior("honest", features, fine, fine_share=0.9)
    assert torch.allclose(corrected.weight, balanced.weight)
    assert float(corrected.bias - balanced.bias) == pytest.approx(math.log(9), rel=1e-5)


def test_one_prior_per_criterion_fitted_on_its_principles_good_and_bad_answers():
    shipped = load_principles(SHIPPED)
    principles = shipped.principles
    priors = principle_priors(shipped, text_features)
    assert set(priors) == {"harmless", "honest"}
    every_good = sum(len(p.examples) for p in principles)
    for criterion, prior in priors.items():
        answers = [(e.good, e.bad) for p in principles if p.criterion == criterion
                   for e in p.examples]
        # its own principles' good and bad answers, and every other principle's good ones
        assert prior.examples == every_good + len(answers)
        good = torch.from_numpy(np.stack([text_features("", g) for g, _ in answers]))
        bad = torch.from_numpy(np.stack([text_features("", b) for _, b in answers]))
        assert float(prior(good).mean()) > float(prior(bad).mean())


def test_each_criterion_takes_its_own_share_of_fine_answers_and_the_default_where_unnamed():
    shipped = load_principles(SHIPPED)
    one_share = principle_priors(shipped.model_copy(update={"fine_share": 0.85}), text_features)
    per_criterion = principle_priors(
        shipped.model_copy(update={"fine_share": {"honest": 0.97}}), text_features)
    # harmless is not named, so it keeps the default 0.85; honest's odds move to 0.97's
    assert float(per_criterion["harmless"].bias) == pytest.approx(float(one_share["harmless"].bias))
    moved = float(per_criterion["honest"].bias - one_share["honest"].bias)
    assert moved == pytest.approx(math.log(0.97 / 0.03) - math.log(0.85 / 0.15), rel=1e-5)


def test_the_shipped_honesty_prior_calls_few_of_the_default_models_everyday_answers_false():
    # None of the v2 corpus's answers is false. At one share of 0.85 for both criteria the
    # prior judged 4-9% of bullet, concise, detailed and casual answers false, and the
    # publish gate refused updates that only sampled more of them (`honest_rate_rose`).
    shipped = load_principles(SHIPPED)
    honest = model_priors(DEFAULT_MODEL_DIR, shipped)["honest"]
    everyday = generate_examples(700, seed=424_242)
    judged_false = honest(answer_features(DEFAULT_MODEL_DIR, [e.prompt for e in everyday],
                                          [e.answer for e in everyday])) < 0
    for style in STYLES:
        of_style = torch.tensor([e.style == style for e in everyday])
        assert float(judged_false[of_style].float().mean()) < 0.04, style
    myths = [e for p in shipped.principles if p.criterion == "honest" for e in p.examples]
    bad = answer_features(DEFAULT_MODEL_DIR, [e.prompt for e in myths], [e.bad for e in myths])
    good = answer_features(DEFAULT_MODEL_DIR, [e.prompt for e in myths], [e.good for e in myths])
    assert bool((honest(bad) < 0).all()) and bool((honest(good) > 0).all())
