import torch

from learners.guard import GUARD_FILES, Guard, fit_guard, load_guards


def test_fit_guard_separates_and_folds_standardisation_into_the_head(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 6, generator=generator) * torch.tensor([1, 50, 1, 1, 1, 1]) + 3
    breaking = features[:, 1] > 3  # the signal sits on a feature with a large scale
    guard = fit_guard(features, breaking)
    accuracy = ((guard.probability(features) > 0.5) == breaking).float().mean()
    assert accuracy > 0.97
    guard.save(tmp_path, "honest")
    assert (tmp_path / GUARD_FILES["honest"]).is_file()
    loaded = Guard.load(tmp_path, "honest")
    assert torch.allclose(loaded.probability(features), guard.probability(features))
    assert guard.answers == loaded.answers == 400  # kept in the file's metadata
    assert Guard.load(tmp_path, "harmless") is None  # one file per criterion
    assert set(load_guards(tmp_path)) == {"honest"}


def test_a_model_without_a_guard_file_runs_without_a_guard(tmp_path):
    assert Guard.load(tmp_path) is None and load_guards(tmp_path) == {}
