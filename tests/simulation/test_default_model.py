"""The shipped default model: loads through the Auto classes, answers in every style, rebuilds."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import typer
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from contracts.settings import DEFAULT_MODEL_DIR
from simulation.cli import model_build
from simulation.corpus import Example, sample_prompts
from simulation.default_model import (
    BuildConfig,
    build_default_model,
    encode_example,
    sample_answers,
    sha256_of,
)
from simulation.styles import STYLES, detect_style


def test_shipped_model_loads_through_the_auto_classes_as_a_small_llama() -> None:
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.max_position_embeddings >= 256
    special = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token}
    assert special == {"<s>", "</s>", "<pad>"}
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    generation = json.loads((DEFAULT_MODEL_DIR / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 10 * 1024 * 1024


def test_build_notes_state_the_sha256_of_the_shipped_weights() -> None:
    notes = (DEFAULT_MODEL_DIR / "BUILD.md").read_text()
    assert sha256_of(DEFAULT_MODEL_DIR / "model.safetensors") in notes


def test_shipped_model_was_built_with_the_default_build_config() -> None:
    # `tailor model build` without options must rebuild the shipped weights.
    shipped = json.loads((DEFAULT_MODEL_DIR / "build_config.json").read_text())
    assert shipped == asdict(BuildConfig())


def test_chat_template_yields_the_prompt_the_model_was_trained_on() -> None:
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    messages = [{"role": "user", "content": "How do I boil an egg?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<s><|user|>How do I boil an egg?<|assistant|>"
    example = Example("How do I boil an egg?", "concise", "Just do it.")
    ids, prompt_len = encode_example(tokenizer, example)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    rendered = rendered if isinstance(rendered, list) else rendered["input_ids"]
    assert ids[:prompt_len] == list(rendered)
    assert ids[-1] == tokenizer.eos_token_id


def test_temperature_one_samples_end_with_eos_and_spread_over_every_style() -> None:
    torch.set_num_threads(1)
    answers = sample_answers(DEFAULT_MODEL_DIR, sample_prompts(210, seed=77), seed=0)
    assert sum(ended for _, ended in answers) >= 0.95 * len(answers)
    styles = Counter(detect_style(text) for text, _ in answers)
    assert styles[None] <= 0.1 * len(answers), styles
    # 30 expected per style; a style under 10 would be too rare for PPO to learn from.
    assert all(styles[style] >= 10 for style in STYLES), styles


def _small_config(seed: int = 0) -> BuildConfig:
    return BuildConfig(
        seed=seed, tokenizer_examples=2000, vocab_size=1024, hidden_size=32,
        intermediate_size=64, num_layers=1, num_heads=2, steps=4, warmup_steps=2,
    )


def test_build_is_bit_for_bit_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    first = build_default_model(tmp_path / "a", _small_config())
    second = build_default_model(tmp_path / "b", _small_config())
    other = build_default_model(tmp_path / "c", _small_config(seed=1))
    assert first.weights_sha256 == second.weights_sha256
    tokenizers = [(tmp_path / name / "tokenizer.json").read_bytes() for name in ("a", "b")]
    assert tokenizers[0] == tokenizers[1]
    assert other.weights_sha256 != first.weights_sha256
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(tmp_path / "a"))


def test_model_build_command_writes_the_folder_and_verify_compares_it(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("build")(model_build)
    app.command("noop")(lambda: None)  # two commands: typer keeps "build" as a subcommand
    runner = CliRunner()
    out = tmp_path / "model"
    build = ["build", "--out", str(out), "--steps", "2"]
    result = runner.invoke(app, [*build, "--style-samples", "5", "--behaviour-samples", "0",
                                 "--principle-samples", "0"])
    assert result.exit_code == 0, result.output
    notes = (out / "BUILD.md").read_text()
    assert sha256_of(out / "model.safetensors") in notes and "5 answers to fresh corpus" in notes
    result = runner.invoke(app, ["build", "--out", str(out), "--steps", "2", "--verify"])
    assert result.exit_code == 0, result.output
    assert "bit for bit" in result.output
    # a different file must be reported as a mismatch, with exit code 1
    (out / "model.safetensors").write_bytes(b"not the weights")
    result = runner.invoke(app, ["build", "--out", str(out), "--steps", "2", "--verify"])
    assert result.exit_code == 1, result.output
    assert "rebuild differs" in result.output


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("hidden_size", 30, "not divisible by num_heads"), ("vocab_size", 100, "vocab_size=100")],
)
def test_bad_build_config_names_the_field(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BuildConfig(**{field: value, "num_heads": 4})
