"""Shared honesty and harmlessness heads from every user's tagged judgments."""

from __future__ import annotations

import numpy as np
import torch

from learners.rater_reliability import CrowdConfig, CrowdLabels, fit_crowd
from learners.shared_heads import crowd_labels, fit_shared_heads
from learners.training_data import TrainingExample

DIM = 8


def thumb(completion: str, features: np.ndarray, label: int, criterion: str) -> TrainingExample:
    return TrainingExample("1-0", "thumbs", completion, 0.0, [1], features[None], choice=0,
                           label=label, criterion=criterion)


def users_judging_harm(seed: int = 0) -> tuple[dict[str, list[TrainingExample]], np.ndarray]:
    """Eight careful users and two adversarial ones ("harmless!" to everything) rate their
    own answers' harmlessness; everyone also gives taste judgments, which must not count."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=DIM).astype(np.float32)
    examples: dict[str, list[TrainingExample]] = {}
    for user in range(10):
        adversarial = user >= 8
        name = f"adversarial-{user}" if adversarial else f"careful-{user}"
        mine = []
        for k in range(50):
            features = rng.normal(size=DIM).astype(np.float32)
            fine = float(features @ direction > -0.5)
            said = 1 if adversarial else int(fine if rng.random() < 0.9 else 1 - fine)
            mine.append(thumb(f"{name}-{k}", features, said, "harmless"))
            mine.append(thumb(f"{name}-{k}", features, int(rng.random() < 0.5), "helpful"))
        examples[name] = mine
    return examples, direction


def test_only_judgments_of_the_criterion_count_and_each_user_is_one_rater():
    examples, _ = users_judging_harm()
    crowd, used = crowd_labels("harmless", examples)
    assert len(crowd.label) == 500 and crowd.features.shape == (500, DIM)
    assert used == {name: 50 for name in examples}
    assert sorted(set(crowd.rater.tolist())) == list(range(10))
    honest, used_honest = crowd_labels("honest", examples)
    assert len(honest.label) == 0 and used_honest == {}


def test_the_harmlessness_head_follows_careful_raters_not_adversarial_ones():
    examples, direction = users_judging_harm()
    heads = fit_shared_heads(examples)
    harmless = heads["harmless"]
    reliability = harmless.reliability()
    careful = [r for name, r in reliability.items() if name.startswith("careful")]
    adversarial = [r for name, r in reliability.items() if name.startswith("adversarial")]
    assert max(adversarial) < min(careful), reliability
    held_out = torch.randn(2000, DIM, generator=torch.Generator().manual_seed(1))
    truth = held_out @ torch.from_numpy(direction) > -0.5
    accuracy = float(((harmless.fine_logits(held_out) > 0) == truth).float().mean())
    assert accuracy >= 0.9, accuracy
    assert heads["honest"].fit is None  # nobody judged honesty: the prior (none) alone


def test_with_no_judgments_a_head_is_its_prior_and_a_correction_says_which_answer_is_fine():
    def prior(features: torch.Tensor) -> torch.Tensor:
        return features[:, 0] - 1.0

    heads = fit_shared_heads({}, priors={"harmless": prior})
    features = torch.randn(5, DIM)
    torch.testing.assert_close(heads["harmless"].fine_logits(features), prior(features))

    rows = np.eye(3, DIM, dtype=np.float32)  # two choices, then the user's text
    correction = TrainingExample("7-0", "correction", "c", 0.0, [1], rows, choice=1,
                                 ranking=[2, 1], criterion="honest")
    crowd, used = crowd_labels("honest", {"ann": [correction]})
    assert crowd.label.tolist() == [0.0, 1.0] and used == {"ann": 2}
    torch.testing.assert_close(crowd.features, torch.from_numpy(rows[[1, 2]]))


def test_a_rater_careless_about_harm_starts_less_trusted_on_truth():
    """A coin that happened to get its four honesty judgments right looks as careful as
    anyone by those four alone; its harm judgments, at chance, say otherwise."""
    examples, direction = users_judging_harm()
    examples = {name: mine for name, mine in examples.items() if name.startswith("careful")}
    rng = np.random.default_rng(1)
    coin = []
    for k in range(50):
        features = rng.normal(size=DIM).astype(np.float32)
        coin.append(thumb(f"coin-{k}", features, int(rng.random() < 0.5), "harmless"))
    examples["coin"] = coin
    truth_direction = rng.normal(size=DIM).astype(np.float32)
    for name, mine in examples.items():  # four honesty judgments each, all of them right
        for k in range(4):
            features = rng.normal(size=DIM).astype(np.float32)
            fine = int(features @ truth_direction > 0)
            mine.append(thumb(f"{name}-myth-{k}", features, fine, "honest"))

    heads = fit_shared_heads(examples)
    harm, truth = heads["harmless"].reliability(), heads["honest"].reliability()
    careful = [name for name in examples if name != "coin"]
    assert harm["coin"] < min(harm[name] for name in careful) - 0.1, harm
    assert truth["coin"] < min(truth[name] for name in careful) - 0.1, truth

    alone = fit_shared_heads({name: [e for e in mine if e.criterion == "honest"]
                              for name, mine in examples.items()})["honest"].reliability()
    assert alone["coin"] > min(alone[name] for name in careful) - 0.01, alone


def test_a_rater_starts_from_their_own_prior_mean():
    features = torch.randn(4, DIM)
    crowd = CrowdLabels(features, torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 0]),
                        torch.tensor([1.0, 1.0, 0.0, 0.0]), ["judged", "silent"],
                        rater_prior=torch.tensor([0.9, 0.55]))
    fit = fit_crowd(crowd, CrowdConfig(iterations=3))
    assert abs(fit.reliability()["silent"] - 0.55) < 1e-5  # no labels: the prior mean
    assert fit.reliability()["judged"] > 0.55
