"""Load the base model and tokenizer from a local folder, the same way everywhere.

Serving, the learners and the CLI all load through here so that every part
agrees on device, dtype and padding. Only local folders: machines here have no
internet (`HF_HUB_OFFLINE=1`), and a production image mounts its weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel
from transformers.utils import logging as hf_logging

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
hf_logging.disable_progress_bar()  # a bar per load of a tiny model is noise in the logs


@dataclass
class BaseModel:
    model: PreTrainedModel
    tokenizer: object  # a transformers tokenizer (TokenizersBackend in transformers 5)
    path: Path
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids) if isinstance(ids, list) else {ids}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TAILOR_DEVICE=cuda but no GPU is visible; use auto or cpu")
    return torch.device(device)


def dtype_for(device: torch.device) -> torch.dtype:
    # bf16 on GPU (DESIGN.md decision 1); fp32 on CPU, where bf16 matmuls are slow
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def check_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        hint = (
            "build the default model with `tailor model build`"
            if path.name == "default_model"
            else "point TAILOR_BASE_MODEL at a folder with config.json, weights and tokenizer"
        )
        raise FileNotFoundError(f"no Hugging Face model at {path}: {hint}")


def load_base_model(path: Path, device: str = "auto", name: str | None = None) -> BaseModel:
    """Load a causal LM and its tokenizer from ``path`` for inference, frozen."""
    check_model_folder(path)
    target = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Batched generation pads on the left so every row's next token is at -1.
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_for(target))
    model.to(target).eval()
    model.requires_grad_(False)
    return BaseModel(model=model, tokenizer=tokenizer, path=path, name=name or path.name)


def small_llama_config(
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    *,
    intermediate_ratio: float = 2.0,
    num_kv_heads: int = 2,
    max_positions: int = 512,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    initializer_range: float = 0.02,
) -> LlamaConfig:
    """The architecture of the small random Llamas that tests and benchmarks build.

    Four attention heads, untied embeddings, no BOS; one place, so that what a
    test checks and what a benchmark times is the same kind of model.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=int(intermediate_ratio * hidden_size),
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        initializer_range=initializer_range,
    )
