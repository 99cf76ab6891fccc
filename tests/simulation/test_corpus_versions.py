"""Corpus versions of the default-model build: v2 untouched, v3 built elsewhere, deterministic."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from contracts.settings import DEFAULT_MODEL_DIR
from simulation.behaviour_corpus import BehaviourExample
from simulation.cli import model_build
from simulation.corpus import iter_examples
from simulation.corpus_versions import corpus_examples, iter_corpus
from simulation.default_model import (
    BuildConfig,
    build_config_for,
    build_default_model,
    sha256_of,
)


def test_corpus_v2_is_exactly_the_stream_the_shipped_model_was_trained_on() -> None:
    # The build draws the tokenizer's examples from seed and the training stream from seed + 1.
    for seed in (0, 1):
        assert list(itertools.islice(iter_corpus(2, seed), 500)) == list(
            itertools.islice(iter_examples(seed), 500)
        )
    assert build_config_for(2) == BuildConfig()  # `tailor model build` rebuilds the shipped one


def test_corpus_v3_examples_carry_their_category_and_behaviour() -> None:
    examples = corpus_examples(3, 400, seed=0)
    assert all(isinstance(example, BehaviourExample) for example in examples)
    assert {example.category for example in examples} == {
        "everyday", "provocation", "harm_request", "myth"
    }
    assert build_config_for(3).corpus_version == 3 and build_config_for(3).steps == 1000


def test_unknown_corpus_version_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"corpus_version=4 is unknown; use one of \(2, 3\)"):
        BuildConfig(corpus_version=4)
    with pytest.raises(ValueError, match="corpus_version=1"):
        corpus_examples(1, 3, seed=0)


def _small_config(corpus_version: int) -> BuildConfig:
    return BuildConfig(
        tokenizer_examples=2000, vocab_size=1024, hidden_size=32, intermediate_size=64,
        num_layers=1, num_heads=2, steps=4, warmup_steps=2, corpus_version=corpus_version,
    )


def test_v3_build_is_bit_for_bit_deterministic_and_differs_from_v2(tmp_path: Path) -> None:
    first = build_default_model(tmp_path / "a", _small_config(3))
    second = build_default_model(tmp_path / "b", _small_config(3))
    v2 = build_default_model(tmp_path / "c", _small_config(2))
    assert first.weights_sha256 == second.weights_sha256
    assert v2.weights_sha256 != first.weights_sha256
    tokenizers = [(tmp_path / name / "tokenizer.json").read_bytes() for name in ("a", "b", "c")]
    assert tokenizers[0] == tokenizers[1] != tokenizers[2]
    assert '"corpus_version": 3' in (tmp_path / "a" / "build_config.json").read_text()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("build")(model_build)
    app.command("noop")(lambda: None)  # two commands: typer keeps "build" as a subcommand
    return app


def test_v3_build_command_needs_an_out_folder_other_than_the_shipped_one() -> None:
    result = CliRunner().invoke(_app(), ["build", "--corpus-version", "3", "--verify"])
    assert result.exit_code == 2, result.output
    assert "pass --out DIR" in result.output
    result = CliRunner().invoke(_app(), ["build", "--corpus-version", "5", "--out", "/tmp/x"])
    assert result.exit_code == 2 and "corpus_version=5 is unknown" in result.output


def test_v3_build_command_notes_behaviours_the_principles_and_how_to_rebuild(
        tmp_path: Path) -> None:
    out = tmp_path / "model"
    build = ["build", "--corpus-version", "3", "--out", str(out), "--steps", "2"]
    result = CliRunner().invoke(
        _app(), [*build, "--style-samples", "2", "--behaviour-samples", "2",
                 "--principle-samples", "10"]
    )
    assert result.exit_code == 0, result.output
    notes = (out / "BUILD.md").read_text()
    assert sha256_of(out / "model.safetensors") in notes
    assert "## Behaviours of fresh samples" in notes and "| harm_request | 2 |" in notes
    assert "tailor model build --corpus-version 3 --out DIR --verify" in notes
    # the model gets the shipped principles, and BUILD.md how well they judge alone
    assert (out / "principles.yaml").read_text() == (
        DEFAULT_MODEL_DIR / "principles.yaml").read_text()
    assert "## The principles' prior" in notes and "| harmless |" in notes
    assert "| honest | myth | 10 |" in notes
    result = CliRunner().invoke(_app(), [*build, "--verify"])
    assert result.exit_code == 0 and "bit for bit" in result.output, result.output
