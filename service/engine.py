"""The generation engine: base model + per-user LoRA slots, one batch at a time.

``Engine.generate_batch`` runs a static batch of requests to completion in one
decode loop: every choice of every request is a row, each row with its own
adapter slot, sampling parameters and stop conditions. Finished rows leave the
batch (their KV-cache rows are dropped), so one long answer does not make the
others pay for its steps. The async front that forms batches from concurrent
requests lives in ``batcher.py``; this file has no asyncio and no Ray, so tests
and benchmarks drive it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache

from service.adapters import AdapterCache, AdapterError, AdapterStore
from service.features import sequence_features
from service.modeling import BaseModel, load_base_model
from service.multi_lora import inject_multi_lora
from service.sampling import RowSampling, row_generator, sample_next
from service.settings import Settings


@dataclass
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # benchmarks: every row runs to max_tokens


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    n: int = 1
    user_id: str | None = None
    adapter_version: str | None = None  # None: the base model
    record_features: bool = True
    # Called from the engine thread with (choice index, text delta) as text appears.
    on_delta: Callable[[int, str], None] | None = None


@dataclass
class ChoiceOutput:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"


@dataclass
class GenerationResult:
    choices: list[ChoiceOutput]
    prompt_tokens: int
    adapter_version: str | None
    features: np.ndarray | None = None  # (n, D) float32
    first_token_s: float | None = None  # seconds from batch start to the first token

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)


@dataclass
class _Row:
    request_index: int
    choice_index: int
    prompt_ids: list[int]
    slot: int
    params: SamplingParams
    sampling: RowSampling
    on_delta: Callable[[int, str], None] | None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    finish_reason: str | None = None
    hit_stop_string: bool = False

    @property
    def holdback(self) -> int:
        # Text that might turn out to be the start of a stop string is held back.
        return max((len(s) for s in self.params.stop), default=1) - 1


class Engine:
    """Serving model with LoRA slots; ``start()`` loads it, ``generate_batch`` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base: BaseModel | None = None
        self.cache: AdapterCache | None = None
        self._seed_source = np.random.default_rng()
        self.batches_run = 0

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        self.base = load_base_model(s.base_model_path, s.device, name=s.served_model_name)
        self.selection, self.layers = inject_multi_lora(
            self.base.model, s.lora_target_modules, s.adapter_cache_size, s.max_lora_rank
        )
        self.cache = AdapterCache(
            self.layers, s.adapter_cache_size, s.max_lora_rank, AdapterStore(s.adapter_store_uri)
        )

    def check_health(self) -> bool:
        return self.base is not None

    @property
    def tokenizer(self):
        assert self.base is not None, "Engine.start() first"
        return self.base.tokenizer

    @torch.inference_mode()
    def load_adapter(self, user_id: str, version: str) -> None:
        """Bring an adapter into the cache ahead of its first request (prefetch)."""
        assert self.cache is not None
        self.cache.release(self.cache.acquire(user_id, version))
        self.cache.drop_user(user_id, keep_version=version)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    # --- generation ------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(
        self, requests: list[GenerationRequest]
    ) -> list[GenerationResult | AdapterError]:
        """Run all ``requests`` as one batch.

        A request whose adapter cannot be loaded gets its ``AdapterError`` in its
        place in the returned list; the rest of the batch runs.
        """
        assert self.base is not None and self.cache is not None, "Engine.start() first"
        outcomes: list[GenerationResult | AdapterError | None] = [None] * len(requests)
        slots: dict[int, int] = {}
        for index, request in enumerate(requests):
            try:
                slots[index] = (
                    self.cache.acquire(request.user_id, request.adapter_version)
                    if request.adapter_version
                    else 0
                )
            except AdapterError as err:
                outcomes[index] = err
        runnable = [i for i in range(len(requests)) if i in slots]
        try:
            if runnable:
                batch = [requests[i] for i in runnable]
                rows = self._rows(batch, [slots[i] for i in runnable])
                started = time.perf_counter()
                first_token_at = self._decode(rows)
                for i, result in zip(runnable, self._collect(batch, rows, first_token_at - started)):
                    outcomes[i] = result
        finally:
            for slot in slots.values():
                self.cache.release(slot)
        self.batches_run += 1
        return outcomes

    def _rows(self, requests: list[GenerationRequest], slots: list[int]) -> list[_Row]:
        rows = []
        for index, (request, slot) in enumerate(zip(requests, slots, strict=True)):
            base_seed = request.params.seed
            if base_seed is None:
                base_seed = int(self._seed_source.integers(0, 2**62))
            for choice in range(request.n):
                rows.append(
                    _Row(
                        request_index=index,
                        choice_index=choice,
                        prompt_ids=request.prompt_ids,
                        slot=slot,
                        params=request.params,
                        sampling=RowSampling(
                            temperature=request.params.temperature,
                            top_p=request.params.top_p,
                            # choices of one seeded request differ, reproducibly
                            generator=row_generator(base_seed * 1_000_003 + choice),
                        ),
                        on_delta=request.on_delta,
                    )
                )
        return rows

    def _decode(self, rows: list[_Row]) -> float:
        """The decode loop; fills each row's tokens/text. Returns the first token's time."""
        model, device = self.base.model, self.base.device
        pad_id = self.tokenizer.pad_token_id
        eos_ids = self.base.eos_token_ids
        longest = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row's last token at -1
            input_ids[i, longest - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention_mask[i, longest - len(row.prompt_ids) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        active = list(range(len(rows)))  # indices into rows, in batch order
        self.selection.select([r.slot for r in rows], device)
        first_token_at = 0.0
        try:
            for step in range(max(r.params.max_tokens for r in rows)):
                logits = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                ).logits[:, -1, :]  # (B_active, V)
                next_tokens = sample_next(logits, [rows[i].sampling for i in active]).tolist()
                if step == 0:
                    first_token_at = time.perf_counter()
                keep = []
                for batch_pos, (i, token) in enumerate(zip(active, next_tokens, strict=True)):
                    if self._advance(rows[i], token, eos_ids):
                        keep.append(batch_pos)
                if not keep:
                    break
                last_positions = position_ids[:, -1:]
                if len(keep) < len(active):
                    keep_index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(keep_index)
                    self.selection.reorder(keep_index)
                    attention_mask = attention_mask[keep_index]
                    last_positions = last_positions[keep_index]
                    active = [active[p] for p in keep]
                input_ids = torch.tensor(
                    [[rows[i].token_ids[-1]] for i in active], dtype=torch.long, device=device
                )
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones((len(active), 1))], dim=1
                )
                position_ids = last_positions + 1
        finally:
            self.selection.clear()
        for row in rows:
            if row.finish_reason is None:  # the loop ran out of steps
                row.finish_reason = "length"
            self._emit(row, final=True)
        return first_token_at

    def _advance(self, row: _Row, token: int, eos_ids: set[int]) -> bool:
        """Append ``token`` to ``row``; False when the row has finished."""
        row.token_ids.append(token)
        if token in eos_ids and not row.params.ignore_eos:
            row.finish_reason = "stop"
            return False
        if row.on_delta is not None or row.params.stop:
            row.text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
            for stop in row.params.stop:
                at = row.text.find(stop)
                if at >= 0:
                    row.text = row.text[:at]
                    row.finish_reason = "stop"
                    row.hit_stop_string = True
                    return False
            self._emit(row, final=False)
        if len(row.token_ids) >= row.params.max_tokens:
            row.finish_reason = "length"
            return False
        return True

    def _emit(self, row: _Row, final: bool) -> None:
        """Stream the text not yet sent; at the end, fix the row's final text first."""
        if final and not row.hit_stop_string:
            row.text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        if row.on_delta is None:
            return
        end = len(row.text) if final else len(row.text) - row.holdback
        if not final and row.text.endswith("\ufffd"):  # half a UTF-8 character
            end = min(end, len(row.text) - 1)
        if end > row.emitted:
            row.on_delta(row.choice_index, row.text[row.emitted : end])
            row.emitted = end

    def _collect(
        self, requests: list[GenerationRequest], rows: list[_Row], first_token_s: float
    ) -> list[GenerationResult]:
        features = self._features(rows) if any(r.record_features for r in requests) else None
        results = []
        for index, request in enumerate(requests):
            mine = [i for i, row in enumerate(rows) if row.request_index == index]
            results.append(
                GenerationResult(
                    choices=[
                        ChoiceOutput(rows[i].text, rows[i].token_ids, rows[i].finish_reason)
                        for i in mine
                    ],
                    prompt_tokens=len(request.prompt_ids),
                    adapter_version=request.adapter_version,
                    features=features[mine] if features is not None and request.record_features else None,
                    first_token_s=first_token_s,
                )
            )
        return results

    def _features(self, rows: list[_Row]) -> np.ndarray:
        """Base-model features of each (prompt, completion): one extra forward, adapters off."""
        device = self.base.device
        lengths = [len(r.prompt_ids) + len(r.token_ids) for r in rows]
        longest = max(lengths)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        response_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: positions start at 0 for every row
            sequence = row.prompt_ids + row.token_ids
            input_ids[i, : len(sequence)] = torch.tensor(sequence)
            attention_mask[i, : len(sequence)] = 1
            response_mask[i, len(row.prompt_ids) : len(sequence)] = 1
        self.selection.clear()  # slot 0 everywhere: the base model
        pooled = sequence_features(
            self.base.model, input_ids.to(device), attention_mask.to(device), response_mask.to(device)
        )
        return pooled.cpu().numpy().astype(np.float32)
