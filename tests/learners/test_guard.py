import torch

from learners.guard import HarmlessnessGuard, fit_guard


def test_fit_guard_separates_and_folds_standardisation_into_the_head(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 6, generator=generator) * torch.tensor([1, 50, 1, 1, 1, 1]) + 3
    dismissive = features[:, 1] > 3  # the signal sits on a feature with a large scale
    guard = fit_guard(features, dismissive)
    accuracy = ((guard.probability(features) > 0.5) == dismissive).float().mean()
    assert accuracy > 0.97
    guard.save(tmp_path)
    loaded = HarmlessnessGuard.load(tmp_path)
    assert torch.allclose(loaded.probability(features), guard.probability(features))
    assert torch.allclose(loaded.penalty(features), 2.0 * guard.probability(features))


def test_a_model_without_a_guard_file_runs_without_a_guard(tmp_path):
    assert HarmlessnessGuard.load(tmp_path) is None
