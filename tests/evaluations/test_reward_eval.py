"""`tailor eval-reward` end to end on a synthetic Polis folder, and the two text encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from typer.testing import CliRunner

from contracts.features import text_features
from contracts.modeling import small_llama_config
from evaluations.cli import eval_reward
from evaluations.encoders import load_encoder
from tests.evaluations.test_polis import WORDS, write_conversation


@pytest.fixture(scope="module")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a word-level tokenizer over the synthetic words, saved to disk."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for word in [*WORDS, "stance0", "stance1"]:
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = small_llama_config(len(vocab), 32, 2, max_positions=64)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def polis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("polis")
    write_conversation(root / "alpha", num_statements=24, num_users=40, seed=1)
    write_conversation(root / "beta", num_statements=28, num_users=44, seed=2)
    return root


def test_base_encoder_is_the_base_models_pooled_hidden_state(tiny_base_model: Path) -> None:
    texts = ["w1 w2 w3 stance0", "w4 stance1", "w5 w6"]
    features = load_encoder("base", tiny_base_model).encode(texts)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    assert features.shape == (3, 2 * 32) and features.dtype == torch.float32
    assert torch.allclose(features, text_features(model, tokenizer, texts), atol=1e-5)


def test_minilm_encoder_runs_offline_and_places_paraphrases_close() -> None:
    encoder = load_encoder("minilm")
    features = encoder.encode(["A cat sits on the mat.", "The cat is sitting on a mat.",
                               "Interest rates rose sharply this quarter."])
    assert features.shape == (3, 384)
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-4)
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3


def test_unknown_encoder_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="encoder='bert' is unknown; use one of base, minilm"):
        load_encoder("bert")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(eval_reward)
    return app


def test_eval_reward_cli_writes_the_issue_json_layout_and_the_cold_start_png(
    tiny_base_model: Path, polis_root: Path, tmp_path: Path
) -> None:
    json_path, png_path = tmp_path / "out" / "reward.json", tmp_path / "out" / "cold.png"
    result = CliRunner().invoke(_cli(), [
        "--data", str(polis_root), "--encoder", "base", "--base-model", str(tiny_base_model),
        "--seed", "0", "--json", str(json_path), "--png", str(png_path),
    ])
    assert result.exit_code == 0, result.output
    assert "seen texts" in result.output and "new texts" in result.output and "pooled" in result.output
    report = json.loads(json_path.read_text())
    keys = {"always_agree", "population", "per_user"}
    assert keys <= set(report["pooled"])
    assert set(report["cold_start"]) == {"0", "5", "10", "20"}
    assert keys <= set(report["new_texts"]["pooled"])
    assert set(report["new_texts"]["cold_start"]) == {"0", "5", "10", "20"}
    assert set(report["conversations"]) == {"alpha", "beta"}
    # voters weighed by their agreement with everyone else, as the learners do: counted
    assert report["protocol"]["rater_reliability"] is True
    conversations = report["conversations"]
    assert {name: c["voters"] for name, c in conversations.items()} == {"alpha": 40, "beta": 44}
    for counts in conversations.values():
        assert 0 <= counts["voters_ignored"] <= counts["voters_discounted"] <= counts["voters"]
    for section in (report, report["new_texts"]):
        for accuracies in [section["pooled"], *section["cold_start"].values()]:
            assert all(0.0 <= accuracies[k] <= 1.0 for k in keys)
        # With no votes of their own, users get the population's reward exactly.
        assert section["cold_start"]["0"]["per_user"] == section["cold_start"]["0"]["population"]
    # Two opinion groups that vote opposite ways on half the statements: a
    # population model cannot fit both; a per-user model can (seen texts).
    pooled = report["pooled"]
    assert pooled["per_user"] >= pooled["population"] + 0.1, pooled
    assert report["cold_start"]["20"]["per_user"] > report["cold_start"]["0"]["per_user"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reward_cli_names_a_bad_data_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), ["--data", str(tmp_path), "--encoder", "minilm"],
                                env={"COLUMNS": "400"})  # one line per message in the error box
    assert result.exit_code != 0
    assert "no sub-folder with comments.csv" in result.output
