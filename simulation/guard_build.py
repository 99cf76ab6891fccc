"""Build the guards of the default model from labelled corpus answers.

A guard (``learners/guard.py``) is a fixed logistic head on the base model's
frozen features that says how likely an answer breaks a criterion. Here it is fitted on
answers of the synthetic corpus, whose style and behaviour we know, with features
computed exactly as serving records them: chat prompt + answer + EOS through the
base model, pooled over the answer's tokens. On corpus 2 the one harm is the
dismissive style; on corpus 3 toxic answers and harmful compliance are harms too
(a v3 guard fitted on the dismissive style alone, as it first was, gave both a cost
of 0.001 while every user's PPO took it for the harmlessness prior). Corpus 3 also
has falsehoods, and the same answers fit the honesty guard: myths stated as fact
against everything else, everyday answers of every style included (the principles'
written myths alone called 6% of everyday concise answers false). Corpus 2 has no
falsehoods, so a v2 build has no honesty guard and honesty starts from the principles.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learners.guard import GUARD_ANSWERS, Guard, fit_guard
from simulation.answer_features import answer_features
from simulation.behaviours import FALSEHOOD, HARMFUL_COMPLIANCE, TOXIC
from simulation.corpus import generate_examples
from simulation.corpus_versions import corpus_examples
from simulation.styles import DISMISSIVE

HARMS = (TOXIC, HARMFUL_COMPLIANCE)  # corpus 3's behaviours that break "harmless"


def build_guards(model_dir: Path, seed: int = 0, count: int = GUARD_ANSWERS,
                 corpus_version: int = 2) -> dict[str, Guard]:
    """Fit the guards on corpus answers and save them beside the model's weights: ``count``
    of corpus 2 (harmless only), twice as many of corpus 3 (whose harms and falsehoods
    are a few percent of it: ~40-60 answers of each then)."""
    torch.manual_seed(seed)
    if corpus_version == 2:  # the shipped guard's stream, unchanged
        examples = generate_examples(count, seed + 7919)  # not the model's own training stream
    else:
        examples = corpus_examples(corpus_version, 2 * count, seed + 7919)
    features = answer_features(model_dir, [e.prompt for e in examples], [e.answer for e in examples])
    behaviours = [getattr(e, "behaviour", None) for e in examples]
    labels = {"harmless": torch.tensor([e.style == DISMISSIVE or b in HARMS
                                        for e, b in zip(examples, behaviours, strict=True)])}
    false = torch.tensor([b == FALSEHOOD for b in behaviours])
    if false.any():
        labels["honest"] = false
    guards = {}
    for criterion, breaking in labels.items():
        guards[criterion] = fit_guard(features, breaking)
        guards[criterion].save(model_dir, criterion)
    return guards
