"""Build the harmlessness guard of the default model from labelled corpus answers.

The guard (``learners/guard.py``) is a fixed logistic head on the base model's
frozen features that says how dismissive an answer is. Here it is fitted on
answers of the synthetic corpus, whose style we know, with features computed
exactly as serving records them: chat prompt + answer + EOS through the base
model, pooled over the answer's tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learners.guard import GUARD_ANSWERS, HarmlessnessGuard, fit_guard
from simulation.answer_features import answer_features
from simulation.corpus import generate_examples
from simulation.styles import DISMISSIVE


def build_guard(model_dir: Path, seed: int = 0, count: int = GUARD_ANSWERS) -> HarmlessnessGuard:
    """Fit the guard on ``count`` corpus answers and save it beside the model's weights."""
    torch.manual_seed(seed)
    examples = generate_examples(count, seed + 7919)  # not the model's own training stream
    features = answer_features(model_dir, [e.prompt for e in examples], [e.answer for e in examples])
    dismissive = torch.tensor([e.style == DISMISSIVE for e in examples])
    guard = fit_guard(features, dismissive)
    guard.save(model_dir)
    return guard
