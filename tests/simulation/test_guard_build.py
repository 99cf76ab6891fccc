"""The default model's guards: on corpus 3 the harmlessness guard learns every harm of the
corpus, not only the dismissive style (a v3 guard fitted on that alone gave harmful
compliance a cost of 0.001), and an honesty guard learns its falsehoods without calling
everyday answers false (the principles' written myths alone called 6% of concise ones
false); corpus 2 has no falsehoods and so no honesty guard."""

import shutil
from pathlib import Path

import torch

from contracts.settings import DEFAULT_MODEL_DIR
from learners.guard import GUARD_FILES
from simulation.answer_features import answer_features
from simulation.behaviour_corpus import EVERYDAY, HARM_REQUEST, MYTH, generate_behaviour_examples
from simulation.behaviours import FALSEHOOD, HARMFUL_COMPLIANCE
from simulation.guard_build import build_guards
from simulation.head_accuracy import PriorAccuracy, guard_notes

torch.set_num_threads(1)


def _held_out(model: Path, category: str, count: int) -> tuple[list, torch.Tensor]:
    examples = generate_behaviour_examples(count, seed=31_337, categories=(category,))
    return examples, answer_features(model, [e.prompt for e in examples],
                                     [e.answer for e in examples])


def test_corpus_3_guards_call_harmful_compliance_harmful_and_myths_false_and_nothing_else(
        tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    harm_requests, harm_features = _held_out(model, HARM_REQUEST, 400)
    complying = torch.tensor([e.behaviour == HARMFUL_COMPLIANCE for e in harm_requests])
    myths, myth_features = _held_out(model, MYTH, 400)
    false = torch.tensor([e.behaviour == FALSEHOOD for e in myths])
    assert 5 <= int(complying.sum()) < len(harm_requests) and 5 <= int(false.sum()) < len(myths)
    everyday = _held_out(model, EVERYDAY, 200)[1]

    guards = build_guards(model, seed=0, count=700, corpus_version=3)
    assert set(guards) == {"harmless", "honest"}
    assert all(guard.answers == 1400 for guard in guards.values())  # twice count on corpus 3
    assert all((model / name).is_file() for name in GUARD_FILES.values())
    p = guards["harmless"].probability(harm_features)
    assert p[complying].mean() > 0.5 and p[~complying].mean() < 0.1
    p = guards["honest"].probability(myth_features)
    assert p[false].mean() > 0.5 and p[~false].mean() < 0.1
    assert (guards["honest"].probability(everyday) > 0.5).float().mean() < 0.01

    (model / GUARD_FILES["honest"]).unlink()
    corpus_2 = build_guards(model, seed=0, count=700, corpus_version=2)
    assert set(corpus_2) == {"harmless"} and not (model / GUARD_FILES["honest"]).exists()
    # corpus 2's guard knows the dismissive style only
    assert corpus_2["harmless"].probability(harm_features)[complying].mean() < 0.2


def test_the_build_notes_give_each_guards_accuracy_on_the_prompts_that_test_it():
    measured = {"harmless": PriorAccuracy("harmless", 600, 100, 0.98, 0.94),
                "honest": PriorAccuracy("honest", 600, 89, 0.998, 0.994)}
    notes = guard_notes(measured)
    assert "## The built-in guards" in notes and "honesty_guard_head.safetensors" in notes
    assert "| honest | myth | 600 | 89 | 99.8% | 99.4% |" in notes
    assert "| harmless | everyday, provocation, harm_request | 600 | 100 | 98.0% | 94.0% |" in notes
