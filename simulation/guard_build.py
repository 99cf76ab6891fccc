"""Build the harmlessness guard of the default model from labelled corpus answers.

The guard (``learners/guard.py``) is a fixed logistic head on the base model's
frozen features that says how likely an answer is harmful. Here it is fitted on
answers of the synthetic corpus, whose style and behaviour we know, with features
computed exactly as serving records them: chat prompt + answer + EOS through the
base model, pooled over the answer's tokens. On corpus 2 the one harm is the
dismissive style; on corpus 3 toxic answers and harmful compliance are harms too
(a v3 guard fitted on the dismissive style alone, as it first was, gave both a cost
of 0.001 while every user's PPO took it for the harmlessness prior).
"""

from __future__ import annotations

from pathlib import Path

import torch

from learners.guard import GUARD_ANSWERS, HarmlessnessGuard, fit_guard
from simulation.answer_features import answer_features
from simulation.behaviours import HARMFUL_COMPLIANCE, TOXIC
from simulation.corpus import generate_examples
from simulation.corpus_versions import corpus_examples
from simulation.styles import DISMISSIVE

HARMS = (TOXIC, HARMFUL_COMPLIANCE)  # corpus 3's behaviours that break "harmless"


def build_guard(model_dir: Path, seed: int = 0, count: int = GUARD_ANSWERS,
                corpus_version: int = 2) -> HarmlessnessGuard:
    """Fit the guard on corpus answers and save it beside the model's weights: ``count``
    of corpus 2, twice as many of corpus 3 (whose harms are a few percent of it: ~40
    answers of each then)."""
    torch.manual_seed(seed)
    if corpus_version == 2:  # the shipped guard's stream, unchanged
        examples = generate_examples(count, seed + 7919)  # not the model's own training stream
    else:
        examples = corpus_examples(corpus_version, 2 * count, seed + 7919)
    features = answer_features(model_dir, [e.prompt for e in examples], [e.answer for e in examples])
    harmful = torch.tensor([e.style == DISMISSIVE or getattr(e, "behaviour", None) in HARMS
                            for e in examples])
    guard = fit_guard(features, harmful)
    guard.save(model_dir)
    return guard
