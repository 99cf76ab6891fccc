"""The tensors of the rows decoding now: KV cache, attention mask, positions.

Continuous batching (iteration-level scheduling, as in Orca, vLLM and TGI) lets
a request join the batch at the next decode step instead of waiting for the
whole batch to finish. Between steps the running batch supports:

- ``prefill``: a new group of rows runs its prompts on its own (left-padded
  among themselves), giving its own ``RunningBatch`` and first-token logits;
- ``join``: that group is appended to the running rows. Both sides are
  left-padded with masked zeros to a common width along the sequence axis, so
  every row's last token stays at column -1 and one decode step serves all;
- ``keep``: finished rows leave (their KV rows are dropped), and leading
  columns that no remaining row attends to are cut, so the width follows the
  live rows rather than the longest prompt ever seen.

Positions are per row (``last_positions``), so padding never shifts a row's
rotary positions. Joining works on full-attention ``DynamicLayer`` caches
(Llama, Qwen2, Mistral without a sliding window); ``joinable`` says whether a
model's cache is one, and the batcher falls back to whole batches otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RunningBatch:
    def __init__(self, cache: DynamicCache, attention_mask: torch.Tensor,
                 last_positions: torch.Tensor) -> None:
        self.cache = cache
        self.attention_mask = attention_mask  # (B, T): 1 where a cache column is a real token
        self.last_positions = last_positions  # (B, 1): position of each row's last cached token

    @property
    def rows(self) -> int:
        return self.attention_mask.shape[0]

    @property
    def width(self) -> int:
        return self.attention_mask.shape[1]

    @property
    def joinable(self) -> bool:
        return _full_attention(self.cache)

    @staticmethod
    def model_joinable(config) -> bool:
        """Whether a model with ``config`` keeps caches that rows can join (no forward)."""
        return _full_attention(DynamicCache(config=config))

    @classmethod
    def prefill(cls, model, prompts: list[list[int]], pad_id: int,
                device: torch.device) -> tuple[RunningBatch, torch.Tensor]:
        """Run ``prompts`` (left-padded); the new batch and each row's next-token logits."""
        longest = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, prompt in enumerate(prompts):  # left padding: every row's last token at -1
            input_ids[i, longest - len(prompt):] = torch.tensor(prompt)
            attention_mask[i, longest - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, cache=cache,
                       use_cache=True).logits[:, -1, :]
        return cls(cache, attention_mask, position_ids[:, -1:]), logits

    def decode(self, model, tokens: list[int]) -> torch.Tensor:
        """Feed each row its next token; the logits for the token after it, (B, V)."""
        device = self.attention_mask.device
        input_ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        self.attention_mask = torch.cat(
            [self.attention_mask, self.attention_mask.new_ones((self.rows, 1))], dim=1)
        self.last_positions = self.last_positions + 1
        return model(input_ids=input_ids, attention_mask=self.attention_mask,
                     position_ids=self.last_positions, cache=self.cache,
                     use_cache=True).logits[:, -1, :]

    def join(self, other: RunningBatch) -> None:
        """Append ``other``'s rows after this batch's rows."""
        width = max(self.width, other.width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width),
                                     _left_pad(theirs.values, width)])
        self.attention_mask = torch.cat([_left_pad_mask(self.attention_mask, width),
                                         _left_pad_mask(other.attention_mask, width)])
        self.last_positions = torch.cat([self.last_positions, other.last_positions])

    def take(self, indices: list[int]) -> RunningBatch:
        """A new batch of copies of the rows at ``indices``; this one is unchanged."""
        index = torch.tensor(indices, dtype=torch.long, device=self.attention_mask.device)
        cache = DynamicCache()
        for number, layer in enumerate(self.cache.layers):
            cache.update(layer.keys[index], layer.values[index], number)
        taken = RunningBatch(cache, self.attention_mask[index], self.last_positions[index])
        taken.keep(list(range(len(indices))))  # cuts the columns only other rows used
        return taken

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (in that order), then cut dead leading columns."""
        index = torch.tensor(indices, dtype=torch.long, device=self.attention_mask.device)
        self.cache.batch_select_indices(index)
        self.attention_mask = self.attention_mask[index]
        self.last_positions = self.last_positions[index]
        live = self.attention_mask.any(dim=0)
        first = int(torch.argmax(live.to(torch.int8)))  # the first column someone attends to
        if first > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            self.attention_mask = self.attention_mask[:, first:]


def _full_attention(cache: DynamicCache) -> bool:
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, width, D), zeros on the left of the sequence axis."""
    return F.pad(states, (0, 0, width - states.shape[-2], 0))


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(mask, (width - mask.shape[-1], 0))
