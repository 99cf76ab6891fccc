"""How well a harmlessness or honesty head judges answers whose behaviour is known.

Used on the shared heads' prior (the written principles alone, at build time) and
on the shared heads the learners fitted from everyone's judgments (``tailor demo``).

The prior heads (``learners.principles``) are fitted on the few hand-written answers
of ``principles.yaml``; a head judges held-out corpus v3 answers whose behaviour and
style are known. An answer breaks *harmless* when it is toxic, harmful compliance or
dismissive, and *honest* when it states a myth as fact. Each criterion is measured
on the answers to the prompts that test it (provocations and requests for harm,
plus everyday prompts for the dismissive style; myths), where both kinds occur.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from contracts.principles_file import PrinciplesFile, load_principles
from learners.principles import PriorHead, principle_priors
from simulation.answer_features import answer_features
from simulation.behaviour_corpus import (
    EVERYDAY,
    HARM_REQUEST,
    MYTH,
    PROVOCATION,
    generate_behaviour_examples,
)
from simulation.behaviours import FALSEHOOD, HARMFUL_COMPLIANCE, TOXIC
from simulation.styles import DISMISSIVE

PRINCIPLES_SEED = 727_272  # held-out corpus answers: not the build's training stream
TESTED_BY: dict[str, tuple[str, ...]] = {
    "harmless": (EVERYDAY, PROVOCATION, HARM_REQUEST),
    "honest": (MYTH,),
}


@dataclass(frozen=True)
class PriorAccuracy:
    criterion: str
    answers: int  # held-out answers judged
    breaking: int  # of them, answers that break the criterion
    accuracy: float
    balanced_accuracy: float  # mean of the accuracies on breaking and on keeping answers


def breaks(criterion: str, behaviour: str, style: str | None) -> bool:
    """Whether an answer of this behaviour and style breaks ``criterion``."""
    if criterion == "harmless":
        return behaviour in (TOXIC, HARMFUL_COMPLIANCE) or style == DISMISSIVE
    return behaviour == FALSEHOOD


def measure_prior(model_dir: Path, principles_path: Path, count: int = 600,
                  seed: int = PRINCIPLES_SEED) -> dict[str, PriorAccuracy]:
    """The prior heads' accuracy per criterion on ``count`` held-out answers each."""
    priors = model_priors(model_dir, load_principles(principles_path))
    return measure_heads(model_dir, dict(priors), count, seed)


def model_priors(model_dir: Path, principles: PrinciplesFile) -> dict[str, PriorHead]:
    """The principles' prior heads on ``model_dir``'s features of their written answers."""
    written = [(e.prompt, answer) for p in principles.principles for e in p.examples
               for answer in (e.good, e.bad)]
    features = answer_features(model_dir, [p for p, _ in written], [a for _, a in written])
    lookup = {pair: row for pair, row in zip(written, features, strict=True)}
    return principle_priors(principles, lambda prompt, answer: lookup[prompt, answer].numpy())


def measure_heads(model_dir: Path, heads: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                  count: int = 600, seed: int = PRINCIPLES_SEED) -> dict[str, PriorAccuracy]:
    """Accuracy per criterion of heads (features (N, D) -> log-odds (N,) that an answer
    keeps the criterion) on ``count`` held-out corpus answers each: the principles'
    prior alone, or the shared heads the learners fitted (``tailor demo``)."""
    measured = {}
    for criterion, prior in heads.items():
        examples = generate_behaviour_examples(count, seed, categories=TESTED_BY[criterion])
        rows = answer_features(model_dir, [e.prompt for e in examples],
                               [e.answer for e in examples])
        broken = torch.tensor([breaks(criterion, e.behaviour, e.style) for e in examples])
        said_broken = prior(rows) < 0
        right = said_broken == broken
        per_class = [right[broken == side].float().mean() for side in (True, False)
                     if bool((broken == side).any())]
        measured[criterion] = PriorAccuracy(
            criterion, len(examples), int(broken.sum()), float(right.float().mean()),
            float(torch.stack(per_class).mean()))
    return measured


def _accuracy_rows(measured: dict[str, PriorAccuracy]) -> str:
    """One markdown table row per criterion: prompts, answers, breaking, accuracies."""
    return "\n".join(
        f"| {m.criterion} | {', '.join(TESTED_BY[m.criterion])} | {m.answers} | {m.breaking} "
        f"| {m.accuracy:.1%} | {m.balanced_accuracy:.1%} |" for m in measured.values())


def guard_notes(measured: dict[str, PriorAccuracy]) -> str:
    """The BUILD.md section on the built-in guards (learners.guard)."""
    rows = _accuracy_rows(measured)
    return f"""
## The built-in guards

Logistic heads fitted on labelled corpus answers at build time (`guard_head.safetensors`,
`honesty_guard_head.safetensors`); each is the prior of its shared head in place of the
principles' (`learners/guard.py` says why). On held-out corpus answers:

| criterion | prompts | answers | breaking | accuracy | balanced |
| --- | --- | --- | --- | --- | --- |
{rows}
"""


def prior_notes(measured: dict[str, PriorAccuracy], principles_path: Path) -> str:
    """The BUILD.md section on the principles' prior."""
    rows = _accuracy_rows(measured)
    return f"""
## The principles' prior

`{principles_path.name}` (written principles, each with a few good and bad answers)
fits the prior the shared harmlessness and honesty heads start from
(`learners/principles.py`). Alone, before anyone's judgments, it judges held-out
corpus v3 answers (seed {PRINCIPLES_SEED}; harmless broken = toxic, harmful
compliance or dismissive; honest broken = a falsehood) as follows:

| criterion | prompt categories | answers | breaking it | accuracy | balanced accuracy |
| --- | --- | --- | --- | --- | --- |
{rows}
"""
