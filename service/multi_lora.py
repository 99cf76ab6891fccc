"""Batched multi-LoRA: one forward pass, a different LoRA adapter on every row.

peft can mix adapters in a batch (`adapter_names=[...]`), but it splits the batch
by adapter inside every layer; measured here it ran at 0.44x the base model's
tokens/s (DESIGN.md). This module does what S-LoRA and Punica do instead: every
target ``nn.Linear`` keeps a table of adapter *slots* (slot 0 is all zeros, the
base model) and each row gathers its own (A, B) pair, so the LoRA part of a layer
is two batched matmuls whatever the mix of adapters:

    y = x W^T + ((x A_s^T) B_s^T) * scale_s      for the row's slot s

Slots are filled from peft-format adapters (see ``adapter_cache.py``); ranks below
``max_rank`` are zero-padded, which leaves the product unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class SlotSelection:
    """Which slot each row of the running batch uses; shared by all layers.

    In a packed step (``packed_step.py``) the input is one sequence: a token per
    running row (``slot_ids``/``single_slot`` as in a decode step), then
    ``segments``, the joining rows' prompt chunks, as (slot, tokens) in order.
    """

    slot_ids: torch.Tensor | None = None  # (B,) long, on the model's device; None: base only
    single_slot: int | None = None  # set when every row uses the same non-base slot
    segments: list[tuple[int, int]] | None = None  # packed steps only
    rows: int = 0  # packed steps: the leading tokens that are running rows
    generation: int = 0  # bumped when the rows' slots change, so layers re-gather
    _slots: list[int] | None = field(default=None, repr=False)

    def select(self, slot_ids: list[int], device: torch.device,
               segments: list[tuple[int, int]] | None = None) -> None:
        self.segments = segments
        self.rows = len(slot_ids)
        if slot_ids == self._slots:  # a packed step and the decode steps around it
            return
        self._slots = list(slot_ids)
        self.generation += 1
        distinct = set(slot_ids)
        if distinct <= {0}:
            self.slot_ids, self.single_slot = None, None
        elif len(distinct) == 1:
            self.slot_ids, self.single_slot = None, slot_ids[0]
        else:
            self.slot_ids = torch.tensor(slot_ids, dtype=torch.long, device=device)
            self.single_slot = None

    def clear(self) -> None:
        self.slot_ids, self.single_slot, self.segments, self._slots = None, None, None, None
        self.rows = 0


class MultiLoRALinear(nn.Module):
    """An ``nn.Linear`` plus a slot table of LoRA weights, one slot per cached adapter."""

    def __init__(
        self, base: nn.Linear, num_slots: int, max_rank: int, selection: SlotSelection
    ) -> None:
        super().__init__()
        self.base = base
        self.selection = selection
        dtype, device = base.weight.dtype, base.weight.device
        # Stored pre-transposed for bmm: x (B,T,in) @ A_t (B,in,r) @ B_t (B,r,out).
        # The adapter's scale (alpha / r) is folded into B_t when a slot is loaded.
        # Buffers, not parameters: serving never trains them, and they stay out of
        # state_dict (an adapter lives in the adapter store, not in the model).
        self.register_buffer(
            "a_t",
            torch.zeros(num_slots + 1, base.in_features, max_rank, dtype=dtype, device=device),
            persistent=False,
        )
        self.register_buffer(
            "b_t",
            torch.zeros(num_slots + 1, max_rank, base.out_features, dtype=dtype, device=device),
            persistent=False,
        )
        self._gathered: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.selection.segments is None:
            delta = self._rows_delta(x)
            return y if delta is None else y + delta
        return y + self._packed_delta(x[0])[None]

    def _rows_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """The LoRA term of (B, T, in), row b through its row's slot; None: base only."""
        sel = self.selection
        if sel.single_slot is not None:
            # Common when one user's batch runs alone: no gather, plain matmuls.
            return (x @ self.a_t[sel.single_slot]) @ self.b_t[sel.single_slot]
        if sel.slot_ids is None:
            return None
        gathered = self._gathered  # one read: the prefetch thread may reset it meanwhile
        if gathered is None or gathered[0] != sel.generation:
            # Gather once per change of the running rows, not once per decode step.
            gathered = (sel.generation, self.a_t[sel.slot_ids], self.b_t[sel.slot_ids])
            self._gathered = gathered
        _, a_rows, b_rows = gathered  # (B, in, r), (B, r, out)
        return torch.bmm(torch.bmm(x, a_rows), b_rows)

    def _packed_delta(self, tokens: torch.Tensor) -> torch.Tensor:
        """The LoRA term of a packed step's (tokens, in): rows first, then the chunks."""
        sel = self.selection
        pieces = []
        if sel.rows:
            rows = self._rows_delta(tokens[: sel.rows, None])
            pieces.append(tokens.new_zeros((sel.rows, self.b_t.shape[-1])) if rows is None
                          else rows[:, 0])
        start = sel.rows
        for slot, length in sel.segments:  # one matmul pair per chunk: its row's slot
            chunk = tokens[start : start + length]
            start += length
            pieces.append((chunk @ self.a_t[slot]) @ self.b_t[slot] if slot
                          else chunk.new_zeros((length, self.b_t.shape[-1])))
        return torch.cat(pieces)

    @torch.no_grad()
    def load_slot(self, slot: int, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> None:
        """Write peft's ``lora_A`` (r, in) and ``lora_B`` (out, r) into ``slot``."""
        self.load_prepared(slot, *self.prepare(lora_a, lora_b, scale))

    def prepare(self, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """peft's pair as a slot holds it: A_t (in, r) and B_t·scale (r, out), in the
        slots' dtype, on the host (pinned where the slots are on CUDA: the copy into a
        slot is then a DMA)."""
        a_t = lora_a.T.to(self.a_t.dtype).contiguous()
        b_t = (lora_b.T.float() * scale).to(self.b_t.dtype).contiguous()
        if self.a_t.is_cuda:
            a_t, b_t = a_t.pin_memory(), b_t.pin_memory()
        return a_t, b_t

    @torch.no_grad()
    def load_prepared(self, slot: int, a_t: torch.Tensor, b_t: torch.Tensor) -> None:
        """Copy a prepared pair (``prepare``) into ``slot``."""
        rank = a_t.shape[1]
        self.a_t[slot].zero_()
        self.b_t[slot].zero_()
        self.a_t[slot, :, :rank].copy_(a_t, non_blocking=True)
        self.b_t[slot, :rank, :].copy_(b_t, non_blocking=True)
        self._gathered = None

    @torch.no_grad()
    def clear_slot(self, slot: int) -> None:
        self.a_t[slot].zero_()
        self.b_t[slot].zero_()
        self._gathered = None


def inject_multi_lora(
    model: nn.Module, target_modules: list[str], num_slots: int, max_rank: int
) -> tuple[SlotSelection, dict[str, MultiLoRALinear]]:
    """Replace every ``nn.Linear`` whose name ends in a target with a ``MultiLoRALinear``.

    Returns the shared slot selection and the wrapped layers by their module path
    (the path peft uses in an adapter's tensor names).
    """
    selection = SlotSelection()
    layers: dict[str, MultiLoRALinear] = {}
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in target_modules and isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            wrapped = MultiLoRALinear(module, num_slots, max_rank, selection)
            setattr(parent, leaf, wrapped)
            layers[name] = wrapped
    if not layers:
        raise ValueError(
            f"no nn.Linear named {target_modules} in {type(model).__name__}; "
            "set TAILOR_LORA_TARGET_MODULES to module names of this model"
        )
    return selection, layers
