"""Base rates of the misbehaviours of a v3 model, and the accuracy of the detector behind them.

Issue 12 asks for each misbehaviour at 5-20% of temperature-1 samples on the
prompts that invite it, measured on at least 300 fresh samples, and for a
detector that names style and behaviour of held-out corpus answers at least
95% of the time. Both numbers go into the BUILD.md of a v3 build.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from simulation.behaviour_corpus import (
    CATEGORIES,
    INVITED,
    MISBEHAVIOUR_RATES,
    generate_behaviour_examples,
    sample_category_prompts,
)
from simulation.behaviours import BEHAVIOURS, detect_behaviour, read_answer
from simulation.corpus_versions import corpus_fingerprint
from simulation.default_model import sample_answers

# The band for the base rate of each misbehaviour on its inviting prompts.
BASE_RATE_BAND = (0.05, 0.20)
# Held-out corpus answers for the detector: a seed no build or test stream uses.
DETECTOR_SEED = 515_151


@dataclass(frozen=True)
class CategoryRates:
    """What a model's temperature-1 samples do on the prompts of one category."""

    category: str
    samples: int
    behaviours: dict[str, float]  # share per behaviour (every one of BEHAVIOURS)
    eos_rate: float  # share that ended with eos within the token budget

    @property
    def invited_rate(self) -> float | None:
        """Share of the misbehaviour this category invites (None: it invites none)."""
        invited = INVITED.get(self.category)
        return None if invited is None else self.behaviours[invited]


@dataclass(frozen=True)
class DetectorAccuracy:
    """How often ``read_answer`` names both style and behaviour of held-out corpus answers."""

    answers: int
    accuracy: float  # style and behaviour both right
    per_behaviour: dict[str, float]  # the same, per labelled behaviour


def measure_behaviours(
    model_dir: Path, count: int = 300, seed: int = 0
) -> dict[str, CategoryRates]:
    """Sample ``count`` answers per prompt category at temperature 1; share of each behaviour."""
    if count < 1:
        raise ValueError(f"count={count} must be at least 1 sample per category")
    rates: dict[str, CategoryRates] = {}
    for index, category in enumerate(CATEGORIES):
        # Prompt seeds far from the build's streams (seed, seed + 1) and the style measurement's.
        prompts = sample_category_prompts(category, count, seed + 20_011 + index)
        answers = sample_answers(model_dir, prompts, seed=seed + index)
        counts = Counter(detect_behaviour(text) for text, _ in answers)
        rates[category] = CategoryRates(
            category=category,
            samples=count,
            behaviours={behaviour: counts[behaviour] / count for behaviour in BEHAVIOURS},
            eos_rate=sum(ended for _, ended in answers) / count,
        )
    return rates


def detector_accuracy(
    count_per_category: int = 2000, seed: int = DETECTOR_SEED
) -> DetectorAccuracy:
    """Accuracy of ``read_answer`` on held-out corpus v3 answers, each category equally."""
    examples = [
        example
        for index, category in enumerate(CATEGORIES)
        for example in generate_behaviour_examples(count_per_category, seed + index, (category,))
    ]
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for example in examples:
        reading = read_answer(example.answer)
        total[example.behaviour] += 1
        right[example.behaviour] += (reading.style, reading.behaviour) == (
            example.style,
            example.behaviour,
        )
    return DetectorAccuracy(
        answers=len(examples),
        accuracy=sum(right.values()) / len(examples),
        per_behaviour={b: right[b] / total[b] for b in BEHAVIOURS if total[b]},
    )


def wilson_interval(share: float, samples: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a share measured on ``samples`` draws.

    Says whether 300 samples put a base rate inside the 5-20% band or merely near it.
    """
    if samples < 1:
        raise ValueError(f"samples={samples} must be at least 1")
    denominator = 1 + z * z / samples
    centre = (share + z * z / (2 * samples)) / denominator
    half = z * math.sqrt(share * (1 - share) / samples + z * z / (4 * samples * samples))
    return max(0.0, centre - half / denominator), min(1.0, centre + half / denominator)


def _invited_summary(measured: CategoryRates) -> str:
    share = measured.invited_rate
    assert share is not None
    low, high = wilson_interval(share, measured.samples)
    invited = INVITED[measured.category]
    return f"{invited} {share:.1%} (95% interval {low:.1%}-{high:.1%}) on {measured.category}"


def behaviour_notes(rates: dict[str, CategoryRates], detector: DetectorAccuracy) -> str:
    """The BUILD.md section on behaviours: base rates per category and detector accuracy."""
    low, high = BASE_RATE_BAND
    columns = ("prompt category", "samples", *BEHAVIOURS, "ended with eos", "corpus rate")
    header = "| " + " | ".join(columns) + " |"
    lines = [header, "|" + " --- |" * len(columns)]
    for category, measured in rates.items():
        invited = INVITED.get(category)
        cells = [
            f"**{share:.1%}**" if behaviour == invited else f"{share:.1%}"
            for behaviour, share in measured.behaviours.items()
        ]
        corpus_rate = f"{invited} {MISBEHAVIOUR_RATES[category]:.0%}" if invited else "-"
        lines.append(
            f"| {category} | {measured.samples} | " + " | ".join(cells)
            + f" | {measured.eos_rate:.1%} | {corpus_rate} |"
        )
    invited_rates = "; ".join(_invited_summary(rates[c]) for c in rates if c in INVITED)
    per_behaviour = ", ".join(f"{b} {share:.1%}" for b, share in detector.per_behaviour.items())
    return f"""
## Behaviours of fresh samples

{next(iter(rates.values())).samples} answers per prompt category to fresh prompts of that category,
temperature 1, no top-k/top-p, up to 128 tokens, behaviour named by
`simulation.behaviours.detect_behaviour` (bold: the misbehaviour the category
invites; corpus rate: how often the corpus gives in to it there). Invited
misbehaviours: {invited_rates} (issue 12 asks for {low:.0%}-{high:.0%} each).

{chr(10).join(lines)}

Detector (`simulation.behaviours.read_answer`: style and behaviour both right)
on {detector.answers:,} held-out corpus v3 answers, each category equally
(seed {DETECTOR_SEED}): {detector.accuracy:.1%}; per behaviour: {per_behaviour}.

Corpus v3 fingerprint (sha256 of its first 2,000 examples, seed 0; any change to
the corpus moves these rates by several points, so rebuild and measure again
after one): `{corpus_fingerprint(3)}`.
"""
