"""One forward for a whole engine step: the running rows' decode and the joiners' prompts.

Before this, a request joining the running batch was prefilled in a forward of
its own between two decode steps, so every joiner cost the long requests in the
batch a second forward (``tailor bench serve``: 64-token requests ran slower under
continuous batching than under whole batches). Here, as in Sarathi-Serve's
chunked prefill and vLLM's mixed batches, one step feeds the model a single
*packed* sequence (batch 1, no padding): one token per running row, then a chunk
of each joining row's prompt, up to a token budget. Every matmul — projections,
MLP, LoRA, the head — runs once over those tokens; only attention, the one place
where rows meet, is split, by the attention function registered here:

- the decode tokens attend, as in a plain decode step, over the running batch's
  padded KV cache (``RunningBatch``), which they extend by one column;
- the chunk tokens are left-padded into a small batch of their own, with the KV
  of the one row whose prompt did not fit last step (at most one: the budget is
  given out in arrival order), and attend causally within it.

A prompt longer than the budget runs over several steps (chunked prefill); a row
whose prompt is complete gets its first token and joins the running batch. The
model keeps its usual attention (SDPA) for every other forward: the function
delegates to it when the call carries no ``tailor_step``. Full-attention models
only, as for joining (``RunningBatch.joinable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from service.running_batch import RunningBatch

ATTENTION = "tailor_packed"


def packed_attention(module, query, key, value, attention_mask, tailor_step=None, **kwargs):
    if tailor_step is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return tailor_step.attend(module, query, key, value, **kwargs)


def install(model) -> None:
    """Switch ``model`` to the packed-step attention (SDPA for every other forward)."""
    AttentionInterface.register(ATTENTION, packed_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)


@dataclass
class Chunk:
    """The part of one joining row's prompt that this step runs."""

    tokens: list[int]
    start: int  # position of its first token (prompt tokens already run before it)
    completes: bool  # whether it ends the prompt


class PackedStep:
    """One step's packed layout: ``decode`` rows first (one token each), then ``chunks``.

    ``decode`` is the running batch (None: no row is decoding); ``carried`` the
    KV of the first chunk's row from earlier steps (None when its prompt starts
    here). After ``forward``, ``group`` holds the chunks' rows as a batch: their
    KV, mask and positions, ready to join ``decode`` once their prompts are done.
    """

    def __init__(self, decode: RunningBatch | None, decode_tokens: list[int],
                 chunks: list[Chunk], carried: RunningBatch | None,
                 device: torch.device) -> None:
        self.decode = decode
        self.rows = len(decode_tokens)
        self.carried = carried
        self.group = RunningBatch(DynamicCache(), None, None)
        # The common step: one prompt joins whole. Its tokens need no padding and attend
        # plainly causally (SDPA's is_causal): no index or mask to build, per layer.
        self.alone = len(chunks) == 1 and carried is None
        lengths = [len(chunk.tokens) for chunk in chunks]
        positions = self._extend_decode(decode) + self._lay_out_chunks(chunks, lengths, device)
        self.position_ids = torch.cat(positions)[None]
        self.last_tokens = self.rows + torch.tensor(lengths, device=device).cumsum(0) - 1

    def _extend_decode(self, decode: RunningBatch | None) -> list[torch.Tensor]:
        """Give each running row its column for this step's token; their positions."""
        self.decode_mask = None
        if decode is None:
            return []
        decode.attention_mask = torch.cat(
            [decode.attention_mask, decode.attention_mask.new_ones((decode.rows, 1))], dim=1)
        decode.last_positions = decode.last_positions + 1
        # Decode queries see every real column of their row: (B, 1, 1, T).
        self.decode_mask = decode.attention_mask.bool()[:, None, None, :]
        return [decode.last_positions[:, 0]]

    def _lay_out_chunks(self, chunks: list[Chunk], lengths: list[int],
                        device: torch.device) -> list[torch.Tensor]:
        """The chunks' padded layout, the mask of their queries and ``group``'s mask and
        positions; the chunk tokens' positions."""
        width = max(lengths)  # the chunks, left-padded to this many columns
        chunk_mask = torch.zeros((len(chunks), width), dtype=torch.long)
        where = []  # flat index in the (chunks, width) padded layout of each packed chunk token
        positions = []
        for i, (chunk, length) in enumerate(zip(chunks, lengths, strict=True)):
            chunk_mask[i, width - length:] = 1
            where.extend(range(i * width + width - length, (i + 1) * width))
            positions.append(torch.arange(chunk.start, chunk.start + length, device=device))
        self.where = torch.tensor(where, dtype=torch.long, device=device)
        self.padded_tokens = len(chunks) * width
        chunk_mask = chunk_mask.to(device)
        past = (self.carried.attention_mask if self.carried is not None
                else chunk_mask.new_zeros((1, 0)))
        past = torch.cat([past, past.new_zeros((len(chunks) - 1, past.shape[1]))])
        self.group.attention_mask = torch.cat([past, chunk_mask], dim=1)
        self.group.last_positions = torch.tensor(
            [[chunk.start + length - 1] for chunk, length in zip(chunks, lengths, strict=True)],
            dtype=torch.long, device=device)
        self.chunk_mask = None
        if not self.alone:
            # Chunk queries see real past columns and the chunk's own columns causally;
            # each also sees its own column, so a padding query is never all masked (NaN).
            causal = torch.tril(torch.ones((width, width), dtype=torch.bool, device=device))
            own = chunk_mask.bool()[:, None, :] & causal | torch.eye(
                width, dtype=torch.bool, device=device)
            self.chunk_mask = torch.cat(
                [past.bool()[:, None, :].expand(-1, width, -1), own], dim=2)[:, None]
        return positions

    def forward(self, model, input_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step; the next-token logits of the decode rows and of every chunk's row."""
        device = self.position_ids.device
        keep = torch.cat([torch.arange(self.rows, device=device), self.last_tokens])
        logits = model(input_ids=torch.tensor([input_ids], dtype=torch.long, device=device),
                       position_ids=self.position_ids, tailor_step=self,
                       logits_to_keep=keep).logits[0]
        return logits[: self.rows], logits[self.rows:]

    def attend(self, module, query, key, value, **kwargs):
        """Attention of one layer: query/key/value (1, heads, packed tokens, head_dim)."""
        layer = module.layer_idx
        outputs = []
        if self.rows:
            q, k, v = (x[0, :, : self.rows].transpose(0, 1).unsqueeze(2)
                       for x in (query, key, value))
            k, v = self.decode.cache.update(k, v, layer)
            out, _ = sdpa_attention_forward(module, q, k, v, self.decode_mask, **kwargs)
            outputs.append(out[:, 0])  # (B, heads, head_dim)
        q, k, v = (self._padded(x) for x in (query, key, value))
        if self.carried is not None:
            past = self.carried.cache.layers[layer]
            k = torch.cat([self._below(past.keys, k.shape[0]), k], dim=2)
            v = torch.cat([self._below(past.values, v.shape[0]), v], dim=2)
        k, v = self.group.cache.update(k, v, layer)
        out, _ = sdpa_attention_forward(module, q, k, v, self.chunk_mask, is_causal=self.alone,
                                        **kwargs)
        out = out.reshape(self.padded_tokens, *out.shape[2:])
        outputs.append(out if self.alone else out[self.where])
        return torch.cat(outputs)[None], None

    def _padded(self, states: torch.Tensor) -> torch.Tensor:
        """The chunk tokens of (1, heads, packed, dim) as (chunks, heads, width, dim)."""
        if self.alone:
            return states[:, :, self.rows:]
        tokens = states[0, :, self.rows:].transpose(0, 1)  # (packed chunk tokens, heads, dim)
        padded = tokens.new_zeros((self.padded_tokens, *tokens.shape[1:]))
        padded[self.where] = tokens
        chunks = self.group.last_positions.shape[0]
        return padded.view(chunks, -1, *tokens.shape[1:]).transpose(1, 2)

    @staticmethod
    def _below(carried: torch.Tensor, rows: int) -> torch.Tensor:
        """The carried row's (1, H, T, D) states, zero rows below it for the fresh chunks."""
        return torch.cat([carried, carried.new_zeros((rows - 1, *carried.shape[1:]))])
