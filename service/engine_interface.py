"""What the Generator deployment asks of an engine, and what crosses that boundary.

Ray Serve LLM's ``LLMServer`` takes an engine class, so that a deployment is
written once and vLLM or another engine plugs in behind it; the Generator
deployment does the same with ``GenerationEngine``. Today's engine is
``service.batching_engine.BatchingEngine`` (transformers, multi-LoRA slots,
continuous batching); an engine for GPUs such as vLLM would implement the same
five methods and map ``GenerationRequest`` onto its own request.

Everything here crosses a Ray handle (pickled): plain dataclasses, and
failures as values (``GenerationFailure``) rather than raised exceptions, so
they arrive intact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from contracts.records import ChoiceRecord
from contracts.settings import Settings


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
    """One chat completion to generate: ``n`` choices for one user's adapter."""

    messages: list[dict]
    params: SamplingParams
    n: int = 1
    user_id: str | None = None
    adapter_version: str | None = None  # None: the base model
    stream: bool = False  # yield ``TextDelta``s as text appears


@dataclass
class TextDelta:
    choice_index: int
    text: str


@dataclass
class GenerationResult:
    """The finished completion; its choices are what the store records."""

    choices: list[ChoiceRecord]
    prompt_token_ids: list[int]
    adapter_version: str | None
    features: np.ndarray | None = None  # (n, D) float32, base-model features per choice
    first_token_s: float | None = None  # at the engine: arrival -> first token
    finished_s: float | None = None  # at the engine: arrival -> result

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)


@dataclass
class GenerationFailure:
    """A request the engine refused or could not finish, as an OpenAI error."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None  # a 429 or 503 the client may retry: when


GenerationEvent = TextDelta | GenerationResult | GenerationFailure


class GenerationEngine(Protocol):
    """An engine the Generator deployment can run; constructed from validated settings."""

    def __init__(self, settings: Settings) -> None: ...

    def start(self) -> None:
        """Load the model; called once, before anything else."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Text deltas (when streamed), then one ``GenerationResult`` or ``GenerationFailure``."""

    def load_adapter(self, user_id: str, version: str | None) -> None:
        """Prefetch ``version`` of the user's adapter; None: drop the user's (forgotten)."""

    def check_health(self) -> bool:
        """Whether the engine can serve now."""

    def metrics_text(self) -> bytes:
        """The engine's Prometheus metrics, in the text exposition format."""
