"""The generation engine: base model + per-user LoRA slots, continuous batching.

Every choice of every request is a row, each with its own adapter slot,
sampling parameters and stop conditions. Requests join the running batch
between decode steps (``admit`` adds their rows; the next ``step`` runs their
prompts in the same forward as the running rows' decode, ``packed_step.py``)
and leave it as soon as all their rows have finished (``step`` returns them),
so a short answer never waits for a long one, and a new request never waits
for the batch in flight. The tensors of the running rows live in
``running_batch.py``; the asyncio side that feeds ``admit``/``step`` from concurrent requests lives in
``batcher.py``. This file has no asyncio and no Ray, so tests and benchmarks
drive it directly (``generate_batch`` runs a fixed set of requests to the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers.decoders import DecodeStream

from contracts.adapter_store import AdapterError, AdapterStore
from contracts.features import sequence_features
from contracts.modeling import BaseModel, load_base_model
from contracts.records import ChoiceRecord
from contracts.settings import Settings
from service import packed_step
from service.adapter_cache import AdapterCache
from service.engine_interface import GenerationResult, SamplingParams
from service.multi_lora import inject_multi_lora
from service.packed_step import Chunk, PackedStep
from service.running_batch import RunningBatch
from service.sampling import RowSampling, row_generator, sample_next


@dataclass
class EngineRequest:
    """A request at the engine's level: the prompt as token ids, rows by ``n``."""

    prompt_ids: list[int]
    params: SamplingParams
    n: int = 1
    user_id: str | None = None
    adapter_version: str | None = None  # None: the base model
    record_features: bool = True
    # perf_counter() when the request reached this process (the batcher's queue);
    # None: when it was admitted. Times in the result count from here.
    arrived_at: float | None = None
    # Called from the engine thread with (choice index, text delta) as text appears.
    on_delta: Callable[[int, str], None] | None = None


@dataclass
class _Row:
    choice_index: int
    prompt_ids: list[int]
    slot: int
    params: SamplingParams
    sampling: RowSampling
    on_delta: Callable[[int, str], None] | None
    # Incremental detokenization, for rows whose text is needed while they run
    # (streamed, or with stop strings): one step per token instead of decoding the
    # row from its first token at every step; it holds back half a character.
    decoder: DecodeStream | None = None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    finish_reason: str | None = None
    hit_stop_string: bool = False
    prefilled: int = 0  # prompt tokens already run (a long prompt runs over several steps)

    @property
    def holdback(self) -> int:
        # Text that might turn out to be the start of a stop string is held back.
        return max((len(s) for s in self.params.stop), default=1) - 1


@dataclass
class _Running:
    """A request in the running batch, holding its adapter slot until it finishes."""

    request: EngineRequest
    slot: int
    rows: list[_Row]
    arrived_at: float
    first_token_s: float | None = None

    @property
    def finished(self) -> bool:
        return all(row.finish_reason is not None for row in self.rows)


class Engine:
    """Serving model with LoRA slots; ``start()`` loads it, ``admit``/``step`` run it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base: BaseModel | None = None
        self.cache: AdapterCache | None = None
        self._seed_source = np.random.default_rng()
        self._batch: RunningBatch | None = None  # tensors of the rows decoding now
        self._active: list[_Row] = []  # those rows, in batch order
        self._requests: list[_Running] = []  # admitted and not yet returned
        self._joining: list[_Row] = []  # admitted rows whose prompts have not all run, in order
        self._carried: RunningBatch | None = None  # KV of the first of them, if it has started
        self._packed = False  # whether steps run packed (packed_step.py)
        self.context_tokens = 2**31  # the model's positions, from start()
        self._selection_stale = True

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        # Adapter configs are read with peft (contracts.lora_config imports it lazily, for
        # the Ingress): import it now, so the first user's request does not wait for it.
        import peft  # noqa: F401

        s = self.settings
        self.base = load_base_model(s.base_model_path, s.device, name=s.served_model_name)
        self.selection, self.layers = inject_multi_lora(
            self.base.model, s.lora_target_modules, s.adapter_cache_size, s.max_lora_rank
        )
        self.cache = AdapterCache(
            self.layers, s.adapter_cache_size, s.max_lora_rank, AdapterStore(s.adapter_store_uri),
            host_capacity=s.adapter_host_cache_size,
        )
        config = self.base.model.config
        # Full attention only: the packed step's attention knows no sliding window.
        self._packed = s.chunked_prefill and RunningBatch.model_joinable(config)
        # Positions the model was trained for: prompt and answer together stay within.
        self.context_tokens = getattr(config, "max_position_embeddings", None) or 2**31
        if self._packed:
            packed_step.install(self.base.model)

    def check_health(self) -> bool:
        return self.base is not None

    @property
    def tokenizer(self):
        assert self.base is not None, "Engine.start() first"
        return self.base.tokenizer

    @property
    def _rust_tokenizer(self):
        # DecodeStream steps on the `tokenizers` object behind the transformers tokenizer.
        return self.tokenizer.backend_tokenizer

    @torch.inference_mode()
    def load_adapter(self, user_id: str, version: str) -> None:
        """Bring an adapter close ahead of its first request (prefetch)."""
        assert self.cache is not None
        self.cache.prefetch(user_id, version)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    # --- generation: the running batch ---------------------------------------
    @property
    def running_rows(self) -> int:
        """Rows decoding or about to (admitted, prompt still running): the batch's load."""
        return len(self._active) + len(self._joining)

    @property
    def joining_rows(self) -> int:
        """Admitted rows whose prompts have not all run yet (chunked prefill)."""
        return len(self._joining)

    @property
    def can_join(self) -> bool:
        """Whether new rows may join while others decode (full-attention caches only)."""
        return self._batch is None or self._batch.joinable

    @torch.inference_mode()
    def admit(self, requests: list[EngineRequest]) -> list[AdapterError | None]:
        """Add ``requests``' rows to the running batch: their prompts run with the
        next ``step`` (packed with the decode; at once, for models that cannot pack).

        Returns, per request, the ``AdapterError`` that kept it out, or None.
        """
        assert self.base is not None and self.cache is not None, "Engine.start() first"
        errors: list[AdapterError | None] = []
        admitted = []
        for request in requests:
            try:
                slot = (self.cache.acquire(request.user_id, request.adapter_version)
                        if request.adapter_version else 0)
            except AdapterError as err:
                errors.append(err)
                continue
            errors.append(None)
            arrived_at = request.arrived_at if request.arrived_at is not None else time.perf_counter()
            admitted.append(_Running(request, slot, self._rows(request, slot), arrived_at))
        if admitted and self._packed:
            self._requests.extend(admitted)
            self._joining.extend(row for running in admitted for row in running.rows)
        elif admitted:
            try:
                self._prefill(admitted)
            except BaseException:
                for running in admitted:
                    self.cache.release(running.slot)
                raise
        return errors

    @torch.inference_mode()
    def step(self) -> list[tuple[EngineRequest, GenerationResult]]:
        """One decode step for every running row (with the joining rows' prompts, up to
        the chunk budget, in the same forward); the requests that finished with it."""
        if self._joining:
            self._packed_step()
        elif self._active:
            if self._selection_stale:  # the rows changed since the last forward
                self.selection.select([row.slot for row in self._active], self.base.device)
                self._selection_stale = False
            self._sample_decoded(
                self._batch.decode(self.base.model, [r.token_ids[-1] for r in self._active]))
        return self._finish()

    def _sample_decoded(self, logits: torch.Tensor) -> None:
        """Each running row's next token; finished rows leave the batch."""
        tokens = sample_next(logits, [row.sampling for row in self._active]).tolist()
        keep = [i for i, (row, token) in enumerate(zip(self._active, tokens, strict=True))
                if self._feed(row, token)]
        if len(keep) < len(self._active):
            self._active = [self._active[i] for i in keep]
            if keep:
                self._batch.keep(keep)
            else:
                self._batch = None
            self._selection_stale = True

    def abort(self) -> list[EngineRequest]:
        """Drop the running batch (after an engine failure); the requests it held."""
        requests = [running.request for running in self._requests]
        for running in self._requests:
            self.cache.release(running.slot)
        self._requests, self._active, self._batch = [], [], None
        self._joining, self._carried = [], None
        self.selection.clear()
        self._selection_stale = True
        return requests

    def generate_batch(
        self, requests: list[EngineRequest]
    ) -> list[GenerationResult | AdapterError]:
        """Run ``requests`` together to completion on an idle engine (tests, benchmarks).

        A request whose adapter cannot be loaded gets its ``AdapterError`` in its
        place in the returned list; the rest of the batch runs.
        """
        assert not self._requests, "generate_batch needs an idle engine"
        outcomes: list = list(self.admit(requests))
        where = {id(request): i for i, request in enumerate(requests)}
        try:
            while self._requests:
                for request, result in self.step():
                    outcomes[where[id(request)]] = result
        except BaseException:
            self.abort()
            raise
        return outcomes

    def _rows(self, request: EngineRequest, slot: int) -> list[_Row]:
        base_seed = request.params.seed
        if base_seed is None:
            base_seed = int(self._seed_source.integers(0, 2**62))
        return [
            _Row(
                prompt_ids=request.prompt_ids,
                choice_index=choice,
                slot=slot,
                params=request.params,
                sampling=RowSampling(
                    temperature=request.params.temperature,
                    top_p=request.params.top_p,
                    # choices of one seeded request differ, reproducibly
                    generator=row_generator(base_seed * 1_000_003 + choice),
                ),
                on_delta=request.on_delta,
                decoder=(DecodeStream(skip_special_tokens=True)
                         if request.on_delta is not None or request.params.stop else None),
            )
            for choice in range(request.n)
        ]

    def _packed_step(self) -> None:
        """Decode the running rows and run the joining rows' prompts, one forward."""
        budget = self.settings.prefill_chunk_tokens
        chunks: list[Chunk] = []
        for row in self._joining:  # in arrival order: only the last chunk may stop short
            if budget == 0:
                break
            end = min(len(row.prompt_ids), row.prefilled + budget)
            chunks.append(Chunk(row.prompt_ids[row.prefilled:end], row.prefilled,
                                completes=end == len(row.prompt_ids)))
            budget -= end - row.prefilled
        joining = self._joining[: len(chunks)]
        decode_tokens = [row.token_ids[-1] for row in self._active]
        self.selection.select([row.slot for row in self._active], self.base.device,
                              segments=[(row.slot, len(chunk.tokens))
                                        for row, chunk in zip(joining, chunks, strict=True)])
        self._selection_stale = True  # the next decode step drops the segments
        step = PackedStep(self._batch, decode_tokens, chunks, self._carried, self.base.device)
        decode_logits, chunk_logits = step.forward(
            self.base.model, decode_tokens + [t for chunk in chunks for t in chunk.tokens])
        for row, chunk in zip(joining, chunks, strict=True):
            row.prefilled += len(chunk.tokens)
        group, self._carried = step.group, None
        ready = len(chunks) - (not chunks[-1].completes)
        if ready < len(chunks):  # the last prompt goes on next step, from its KV so far
            self._carried = group.take([ready])
            group.keep(list(range(ready)))
        self._joining = self._joining[ready:]
        if self._active:
            self._sample_decoded(decode_logits)
        if ready:
            self._join(joining[:ready], group, chunk_logits[:ready], self._requests)

    def _join(self, rows: list[_Row], batch: RunningBatch, logits: torch.Tensor,
              requests: list[_Running]) -> None:
        """Rows whose prompts have run (of ``requests``): sample their first tokens, add
        them to the running batch."""
        tokens = sample_next(logits, [row.sampling for row in rows]).tolist()
        now, started = time.perf_counter(), {id(row) for row in rows}
        for running in requests:
            if running.first_token_s is None and any(id(r) in started for r in running.rows):
                running.first_token_s = now - running.arrived_at
        keep = [i for i, (row, token) in enumerate(zip(rows, tokens, strict=True))
                if self._feed(row, token)]
        if keep:
            if len(keep) < len(rows):
                batch.keep(keep)
            if self._batch is None:
                self._batch = batch
            else:
                self._batch.join(batch)
            self._active.extend(rows[i] for i in keep)
        self._selection_stale = True

    def _prefill(self, admitted: list[_Running]) -> None:
        """Models that cannot pack: run the new rows' prompts now, then join them."""
        rows = [row for running in admitted for row in running.rows]
        self.selection.select([row.slot for row in rows], self.base.device)
        self._selection_stale = True  # the running rows need theirs back before the next step
        batch, logits = RunningBatch.prefill(
            self.base.model, [row.prompt_ids for row in rows], self.tokenizer.pad_token_id,
            self.base.device,
        )
        self._join(rows, batch, logits, admitted)
        # Last: until here a failure leaves the admitted requests to ``admit``,
        # which releases their slots.
        self._requests.extend(admitted)

    def _feed(self, row: _Row, token: int) -> bool:
        """Give ``row`` its next token; False (after streaming its last text) when it is done."""
        if self._advance(row, token, self.base.eos_token_ids):
            return True
        self._emit(row, final=True)
        return False

    def _finish(self) -> list[tuple[EngineRequest, GenerationResult]]:
        """Take the requests whose rows have all finished out of the running set."""
        done = [running for running in self._requests if running.finished]
        if not done:
            return []
        self._requests = [running for running in self._requests if not running.finished]
        for running in done:  # before the features' forward, which may fail
            self.cache.release(running.slot)
        featured = [row for running in done if running.request.record_features
                    for row in running.rows]
        features = iter(self._features(featured)) if featured else None
        finished = []
        for running in done:
            request = running.request
            finished.append((request, GenerationResult(
                choices=[ChoiceRecord(row.text, row.token_ids, row.finish_reason)
                         for row in running.rows],
                prompt_token_ids=request.prompt_ids,
                adapter_version=request.adapter_version,
                features=(np.stack([next(features) for _ in running.rows])
                          if request.record_features else None),
                first_token_s=running.first_token_s,
                finished_s=time.perf_counter() - running.arrived_at,
            )))
        return finished

    def _advance(self, row: _Row, token: int, eos_ids: set[int]) -> bool:
        """Append ``token`` to ``row``; False when the row has finished."""
        row.token_ids.append(token)
        if token in eos_ids and not row.params.ignore_eos:
            row.finish_reason = "stop"
            return False
        if row.on_delta is not None or row.params.stop:
            piece = row.decoder.step(self._rust_tokenizer, token)
            if piece:
                searched = max(0, len(row.text) - row.holdback)  # a stop may straddle the pieces
                row.text += piece
                for stop in row.params.stop:
                    at = row.text.find(stop, searched)
                    if at >= 0:
                        row.text = row.text[:at]
                        row.finish_reason = "stop"
                        row.hit_stop_string = True
                        return False
            self._emit(row, final=False)
        if (len(row.token_ids) >= row.params.max_tokens
                or len(row.prompt_ids) + len(row.token_ids) >= self.context_tokens):
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
        if end > row.emitted:
            row.on_delta(row.choice_index, row.text[row.emitted : end])
            row.emitted = end

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
        self._selection_stale = True
        pooled = sequence_features(
            self.base.model, input_ids.to(device), attention_mask.to(device), response_mask.to(device)
        )
        return pooled.cpu().numpy().astype(np.float32)
