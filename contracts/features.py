"""Frozen text features for the reward model: the base model's final hidden states.

DESIGN.md decision 5: the reward model is a small head on frozen features of the
(prompt, completion) text. We take the base model's last-layer hidden states
(adapters disabled, so the features do not move as a user's adapter trains) and
pool them over the completion's tokens: the state at the last token (which, in a
causal model, has read the whole text) concatenated with the mean over the
completion (which keeps style signals that the last token may wash out).
The same function serves completions at generation time, PPO rollouts in the
learners and plain texts in `tailor eval-reward`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def pool_hidden_states(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pool (B, T, H) hidden states over the positions where ``mask`` (B, T) is 1.

    Returns (B, 2H): [state at the last masked position, mean over masked positions].
    A row with an empty mask gets zeros.
    """
    mask = mask.to(hidden.dtype)  # (B, T)
    count = mask.sum(dim=1, keepdim=True)  # (B, 1)
    mean = (hidden * mask.unsqueeze(-1)).sum(dim=1) / count.clamp(min=1.0)  # (B, H)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last_index = torch.where(mask > 0, positions, torch.zeros_like(positions)).amax(dim=1)
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]  # (B, H)
    last = last * (count > 0).to(hidden.dtype)
    return torch.cat([last, mean], dim=-1).float()


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run a peft model as its base (the KL reference); a plain model as it is."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        yield
    else:
        with disable():
            yield


@torch.no_grad()
def sequence_features(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    feature_mask: torch.Tensor,
) -> torch.Tensor:
    """Features (B, 2H) of each row, pooled over ``feature_mask`` (the completion tokens).

    ``input_ids``/``attention_mask`` (B, T) hold prompt + completion, left or right
    padded. The model runs with adapters disabled.
    """
    with adapters_disabled(model):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
        )
    hidden = out.hidden_states[-1]  # (B, T, H), after the final norm in HF Llama
    return pool_hidden_states(hidden, feature_mask * attention_mask)


@torch.no_grad()
def text_features(
    model: nn.Module, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 256
) -> torch.Tensor:
    """Features (N, 2H) of plain texts, pooled over all of each text's tokens."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
        chunks.append(
            sequence_features(
                model, batch["input_ids"], batch["attention_mask"], batch["attention_mask"]
            ).cpu()
        )
    if not chunks:
        hidden = model.config.hidden_size
        return torch.zeros(0, 2 * hidden)
    return torch.cat(chunks)
