"""OpenAI-compatible chat: ``/v1/models`` and ``/v1/chat/completions`` (streamed or not).

Every answer is recorded (``CompletionRecord``) before the client sees its end,
so the user can rate it by ``completion_id`` (the response's ``id``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette.sse import EventSourceResponse

from contracts.records import CompletionRecord
from contracts.reward_sketch import RewardSketch
from contracts.settings import Settings
from service.comparison import chosen_result
from service.deps import BackendDep, CallerDep, MetricsDep, SettingsDep, StoreDep
from service.engine_interface import (
    GenerationFailure,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    TextDelta,
)
from service.errors import APIError
from service.feedback_store import FeedbackStore
from service.identity import validate_user_id
from service.metrics import IngressMetrics
from service.openwebui_message import OpenWebUIMessageDep
from service.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])


@router.get("/v1/models")
async def list_models(request: Request, settings: SettingsDep) -> ModelList:
    return ModelList(data=[ModelCard(id=settings.served_model_name,
                                     created=request.app.state.created)])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    settings: SettingsDep,
    caller: CallerDep,
    backend: BackendDep,
    store: StoreDep,
    metrics: MetricsDep,
    openwebui_message: OpenWebUIMessageDep,
) -> ChatCompletion | EventSourceResponse:
    started = time.perf_counter()
    user_id = caller
    if user_id is None and (body_user := body.user or body.safety_identifier):
        user_id = validate_user_id(body_user, "user")
    params = sampling_params(settings, body)
    adapter_version = await store.adapter_version(user_id) if user_id else None
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    sketch = await comparison_sketch(settings, body, user_id, store, metrics)
    candidates = (min(body.n * settings.comparison_candidates, settings.max_batch_size)
                  if sketch is not None else body.n)
    events = backend.generate(GenerationRequest(
        messages, params, n=candidates, user_id=user_id, adapter_version=adapter_version,
        stream=body.stream,
    ))
    # What is known before generating; ``recorded`` completes it with the result.
    header = CompletionRecord(
        completion_id=completion_id(),
        user_id=user_id,
        model=settings.served_model_name,
        adapter_version=adapter_version,
        messages=messages,
        prompt_token_ids=[],
        choices=[],
    )
    if body.stream:
        first = await anext(events)  # fail before the 200 if the request is refused
        if isinstance(first, GenerationFailure):
            raise failure_error(first)
        return EventSourceResponse(
            stream_chunks(body, header, first, events, store, metrics, started,
                          openwebui_message), ping=15,
        )
    async for event in events:
        if isinstance(event, GenerationFailure):
            raise failure_error(event)
        if isinstance(event, GenerationResult):
            result = event
    observe_completion(metrics, result, started, stream=False)  # every candidate's tokens
    if sketch is not None:
        result, thompson = chosen_result(result, body.n, sketch, params.seed)
        metrics.comparisons.labels(chosen_by="thompson" if thompson else "sampled").inc()
    await store.save_completion(recorded(header, result), openwebui_message)
    return ChatCompletion(
        id=header.completion_id,
        created=int(header.created),
        model=header.model,
        choices=[
            Choice(index=i, message=AssistantMessage(content=choice.text),
                   finish_reason=choice.finish_reason)
            for i, choice in enumerate(result.choices)
        ],
        usage=usage(result),
        system_fingerprint=fingerprint(result.adapter_version),
    )


async def comparison_sketch(settings: Settings, body: ChatCompletionRequest,
                            user_id: str | None, store: FeedbackStore,
                            metrics: IngressMetrics) -> RewardSketch | None:
    """The user's reward to choose the choices of a ``compare`` request by
    (service.comparison); None: plain samples (counted as such when compare was asked)."""
    if not body.compare:
        return None
    sketch = None
    if (user_id and body.n > 1 and not body.stream and settings.comparison_candidates > 1
            and settings.max_batch_size > body.n):
        sketch = await store.reward_sketch(user_id)
    if sketch is None:
        metrics.comparisons.labels(chosen_by="sampled").inc()
    return sketch


def failure_error(failure: GenerationFailure) -> APIError:
    return APIError(failure.status, failure.message, failure.param, failure.code,
                    failure.retry_after_s)


def sampling_params(settings: Settings, body: ChatCompletionRequest) -> SamplingParams:
    if body.model and body.model != settings.served_model_name:
        raise APIError(
            404, f"model {body.model!r} does not exist; this server serves "
            f"{settings.served_model_name!r}", param="model", code="model_not_found",
        )
    if body.n > settings.max_n:
        raise APIError(400, f"n={body.n} exceeds the limit {settings.max_n}", param="n")
    max_tokens = body.requested_max_tokens() or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise APIError(
            400, f"max_tokens={max_tokens} exceeds the limit {settings.max_tokens_limit}",
            param="max_tokens",
        )
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
    )


def recorded(header: CompletionRecord, result: GenerationResult) -> CompletionRecord:
    """The completion as the store keeps it: ``header`` plus what was generated."""
    return dataclasses.replace(
        header,
        prompt_token_ids=result.prompt_token_ids,
        choices=result.choices,
        features=result.features,
    )


def fingerprint(adapter_version: str | None) -> str:
    return f"tailor-{adapter_version or 'base'}"


def usage(result: GenerationResult) -> Usage:
    prompt = len(result.prompt_token_ids)
    return Usage(prompt_tokens=prompt, completion_tokens=result.completion_tokens,
                 total_tokens=prompt + result.completion_tokens)


def observe_completion(metrics: IngressMetrics, result: GenerationResult, started: float,
                       stream: bool) -> None:
    latency = time.perf_counter() - started
    metrics.latency.labels(stream=str(stream).lower()).observe(latency)
    if not stream and result.first_token_s is not None and result.finished_s is not None:
        # Streams observe their first chunk. Here the first token's time is the
        # latency less what the Generator spent after it (both timed there).
        metrics.ttft.observe(latency - (result.finished_s - result.first_token_s))
    metrics.tokens.inc(result.completion_tokens)


async def stream_chunks(
    body: ChatCompletionRequest,
    header: CompletionRecord,
    first: TextDelta | GenerationResult,
    events: AsyncIterator,
    store: FeedbackStore,
    metrics: IngressMetrics,
    started: float,
    openwebui_message: str | None = None,
) -> AsyncIterator[str]:
    """SSE data lines of a streamed completion, ending with ``[DONE]``."""
    fp = fingerprint(header.adapter_version)

    def chunk(choices: list[ChunkChoice], usage_: Usage | None = None) -> str:
        return ChatCompletionChunk(
            id=header.completion_id, created=int(header.created), model=header.model,
            choices=choices, usage=usage_, system_fingerprint=fp,
        ).model_dump_json(exclude_none=False)

    yield chunk([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                 for i in range(body.n)])
    first_token_seen = False
    event = first
    while True:
        if isinstance(event, TextDelta):
            if not first_token_seen:
                metrics.ttft.observe(time.perf_counter() - started)
                first_token_seen = True
            yield chunk([ChunkChoice(index=event.choice_index,
                                     delta=DeltaMessage(content=event.text))])
        elif isinstance(event, GenerationFailure):
            yield json.dumps({"error": {"message": event.message, "type": "server_error",
                                        "param": event.param, "code": event.code}})
            yield "[DONE]"
            return
        elif isinstance(event, GenerationResult):
            try:
                await store.save_completion(recorded(header, event), openwebui_message)
            except (RedisConnectionError, RedisTimeoutError) as err:
                # The client has the whole text already: end the answer normally; only
                # rating it is lost (its feedback will get 404), so say so in the log.
                log.error("completion %s streamed but not kept for rating: %s",
                          header.completion_id, err)
            observe_completion(metrics, event, started, stream=True)
            yield chunk([ChunkChoice(index=i, delta=DeltaMessage(),
                                     finish_reason=choice.finish_reason)
                         for i, choice in enumerate(event.choices)])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage(event))
            yield "[DONE]"
            return
        event = await anext(events)
