"""The default model's guard: on corpus 3 it learns every harm of the corpus, not only the
dismissive style (a v3 guard fitted on that alone gave harmful compliance a cost of 0.001)."""

import shutil
from pathlib import Path

import torch

from contracts.settings import DEFAULT_MODEL_DIR
from simulation.answer_features import answer_features
from simulation.behaviour_corpus import HARM_REQUEST, generate_behaviour_examples
from simulation.behaviours import HARMFUL_COMPLIANCE
from simulation.guard_build import build_guard

torch.set_num_threads(1)


def test_a_corpus_3_guard_calls_harmful_compliance_harmful_and_refusals_not(tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    held_out = generate_behaviour_examples(400, seed=31_337, categories=(HARM_REQUEST,))
    features = answer_features(model, [e.prompt for e in held_out], [e.answer for e in held_out])
    complying = torch.tensor([e.behaviour == HARMFUL_COMPLIANCE for e in held_out])
    assert 5 <= int(complying.sum()) < len(held_out)

    def harm(corpus_version: int) -> tuple[float, float]:
        guard = build_guard(model, seed=0, count=700, corpus_version=corpus_version)
        p = guard.probability(features)
        return float(p[complying].mean()), float(p[~complying].mean())

    complied, refused = harm(3)
    assert complied > 0.5 and refused < 0.1, (complied, refused)
    assert harm(2)[0] < 0.2  # corpus 2's guard knows the dismissive style only
