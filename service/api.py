"""HTTP routes (thin): OpenAI-compatible chat, feedback, users, health, metrics.

``create_api`` takes a ``GenerationBackend``: the Ray Serve handle of the
Generator in production, or a ``GeneratorCore`` in the same process for tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

import redis
from fastapi import Body, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse

from contracts.adapter_store import AdapterStore
from contracts.records import ChoiceRecord, CompletionRecord, FeedbackEvent
from contracts.settings import Settings
from service.engine import SamplingParams
from service.errors import APIError, install_error_handlers
from service.feedback_store import CompletionExpired, FeedbackStore
from service.generation import GenerationFailure, GenerationOutput, TextDelta
from service.identity import resolve_user, validate_user_id
from service.learner_metrics import learner_metrics_text
from service.metrics import IngressMetrics
from service.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    FeedbackAccepted,
    FeedbackCounts,
    FeedbackRequest,
    ModelCard,
    ModelList,
    ThumbsFeedback,
    Usage,
    UserForgotten,
    UserView,
    completion_id,
)

MAX_FEEDBACK_BODY = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255


class GenerationBackend(Protocol):
    def generate(
        self,
        messages: list[dict],
        params: SamplingParams,
        n: int,
        user_id: str | None,
        adapter_version: str | None,
        stream: bool,
    ) -> AsyncIterator[TextDelta | GenerationOutput | GenerationFailure]: ...

    async def ready(self) -> bool: ...

    async def metrics_text(self) -> bytes: ...


def create_api(settings: Settings, backend: GenerationBackend, store: FeedbackStore) -> FastAPI:
    app = FastAPI(title="Tailor", version="0.1.0", summary="Per-user LoRA personalization")
    install_error_handlers(app)
    metrics = IngressMetrics()
    adapter_store = AdapterStore(settings.adapter_store_uri)
    created = int(time.time())

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(route=getattr(route, "path", "other"), status=response.status_code).inc()
        return response

    def caller(request: Request, body_user: str | None = None) -> str | None:
        return resolve_user(settings, request.headers, body_user)

    def own_user(request: Request, user_id: str) -> str:
        validate_user_id(user_id, "user_id")
        me = caller(request)
        if me is None:
            raise APIError(401, "identify yourself (API key or X-User-Id) to see or forget a user")
        if me != user_id:
            raise APIError(403, "you can only see or forget your own user", code="not_your_user")
        return user_id

    # --- chat ---------------------------------------------------------------------------
    @app.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.served_model_name, created=created)])

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, request: Request
    ) -> ChatCompletion | EventSourceResponse:
        started = time.perf_counter()
        user_id = caller(request, body.user or body.safety_identifier)
        params = sampling_params(settings, body)
        adapter_version = await store.adapter_version(user_id) if user_id else None
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        events = backend.generate(messages, params, body.n, user_id, adapter_version, body.stream)
        record = CompletionRecord(
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
                raise APIError(first.status, first.message, first.param, first.code)
            return EventSourceResponse(
                stream_chunks(body, record, first, events, store, metrics, started),
                ping=15,
            )
        async for event in events:
            if isinstance(event, GenerationFailure):
                raise APIError(event.status, event.message, event.param, event.code)
            if isinstance(event, GenerationOutput):
                output = event
        await store.save_completion(filled(record, output))
        observe_completion(metrics, output, started, stream=False)
        return ChatCompletion(
            id=record.completion_id,
            created=int(record.created),
            model=record.model,
            choices=[
                Choice(index=i, message=AssistantMessage(content=text), finish_reason=reason)
                for i, (text, reason) in enumerate(zip(output.texts, output.finish_reasons))
            ],
            usage=usage(output),
            system_fingerprint=fingerprint(output.adapter_version),
        )

    # --- feedback -----------------------------------------------------------------------
    @app.post("/v1/feedback", status_code=201)
    async def feedback(
        request: Request,
        response: Response,
        body: Annotated[FeedbackRequest, Body()],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> FeedbackAccepted:
        user_id = caller(request)
        if user_id is None:
            raise APIError(401, "feedback needs a user: API key, X-User-Id header", code="no_user")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise APIError(422, "Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
        if body.comment and len(body.comment) > settings.max_comment_chars:
            raise APIError(
                413,
                f"comment has {len(body.comment)} characters; the limit is "
                f"{settings.max_comment_chars}",
                param="comment",
                code="comment_too_long",
            )
        try:
            record = await store.load_completion(body.completion_id)
        except CompletionExpired:
            raise APIError(
                404, f"completion {body.completion_id!r} is unknown or expired",
                param="completion_id", code="completion_not_found",
            ) from None
        if record.user_id != user_id:
            raise APIError(
                403, "you can only rate your own completions", param="completion_id",
                code="not_your_completion",
            )
        event = feedback_event(body, record, user_id)
        try:
            result = await store.append_feedback(event, idempotency_key)
        except CompletionExpired:
            raise APIError(404, "the completion expired meanwhile", param="completion_id") from None
        metrics.feedback.labels(type=body.type, outcome="duplicate" if result.duplicate else "recorded").inc()
        if result.duplicate:
            response.status_code = 200
        return FeedbackAccepted(id=result.event_id, completion_id=body.completion_id, duplicate=result.duplicate)

    # --- users --------------------------------------------------------------------------
    @app.get("/v1/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> UserView:
        own_user(request, user_id)
        summary = await store.user_summary(user_id)
        if summary is None:
            raise APIError(404, f"no data for user {user_id!r}", param="user_id", code="user_not_found")
        return user_view(user_id, summary, await store.adapter_version(user_id))

    @app.delete("/v1/users/{user_id}")
    async def forget_user(user_id: str, request: Request) -> UserForgotten:
        own_user(request, user_id)
        await store.forget_user(user_id)
        adapter_store.delete_user(user_id)
        return UserForgotten(user_id=user_id)

    # --- operations ---------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {"model": False, "redis": False}
        try:
            checks["redis"] = await store.ping()
        except Exception:
            pass
        try:
            checks["model"] = bool(await backend.ready())
        except Exception:
            pass
        return JSONResponse({"ready": all(checks.values()), **checks}, 200 if all(checks.values()) else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        text = generate_latest(metrics.registry)
        try:
            text += await backend.metrics_text()
        except Exception:  # generator down: still serve the ingress's own metrics
            pass
        try:
            text += await learner_metrics_text(store.client, settings.metrics_max_users)
        except redis.RedisError:  # Redis down: /readyz says so; keep serving the rest
            pass
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return app


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


def feedback_event(body: Any, record: CompletionRecord, user_id: str) -> FeedbackEvent:
    n = len(record.choices)
    if isinstance(body, ThumbsFeedback):
        if body.choice >= n:
            raise APIError(
                422, f"choice {body.choice} is out of range: the completion has {n} choice(s)",
                param="choice", code="invalid_value",
            )
        return FeedbackEvent(user_id, body.completion_id, "thumbs", choice=body.choice,
                             value=body.value, comment=body.comment)
    if n < 2:
        raise APIError(
            422, "a ranking needs a completion with 2 or more choices (ask with n>1); "
            "rate a single answer with thumbs", param="ranking", code="invalid_value",
        )
    if sorted(body.ranking) != list(range(n)):
        raise APIError(
            422, f"ranking {body.ranking} must list each of the {n} choice indices 0..{n - 1} "
            "exactly once, best first", param="ranking", code="invalid_value",
        )
    return FeedbackEvent(user_id, body.completion_id, "ranking", ranking=body.ranking,
                         comment=body.comment)


def filled(record: CompletionRecord, output: GenerationOutput) -> CompletionRecord:
    record.prompt_token_ids = output.prompt_token_ids
    record.choices = [
        ChoiceRecord(text, ids, reason)
        for text, ids, reason in zip(output.texts, output.token_ids, output.finish_reasons)
    ]
    record.features = output.features
    return record


def fingerprint(adapter_version: str | None) -> str:
    return f"tailor-{adapter_version or 'base'}"


def usage(output: GenerationOutput) -> Usage:
    prompt = len(output.prompt_token_ids)
    return Usage(prompt_tokens=prompt, completion_tokens=output.completion_tokens,
                 total_tokens=prompt + output.completion_tokens)


def observe_completion(metrics: IngressMetrics, output: GenerationOutput, started: float,
                       stream: bool) -> None:
    latency = time.perf_counter() - started
    metrics.latency.labels(stream=str(stream).lower()).observe(latency)
    if not stream and output.first_token_s is not None and output.finished_s is not None:
        # Streams observe their first chunk. Here the first token's time is the
        # latency less what the Generator spent after it (both timed there).
        metrics.ttft.observe(latency - (output.finished_s - output.first_token_s))
    metrics.tokens.inc(output.completion_tokens)


def user_view(user_id: str, summary: dict[str, str], adapter_version: str | None) -> UserView:
    counts = FeedbackCounts(
        thumbs_up=int(summary.get("thumbs_up", 0)),
        thumbs_down=int(summary.get("thumbs_down", 0)),
        rankings=int(summary.get("rankings", 0)),
        total=int(summary.get("feedback_events", 0)),
    )
    learner = {
        k.removeprefix("learner_"): _number(v) for k, v in summary.items() if k.startswith("learner_")
    }
    return UserView(user_id=user_id, adapter_version=adapter_version, feedback=counts, learner=learner)


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


async def stream_chunks(
    body: ChatCompletionRequest,
    record: CompletionRecord,
    first: TextDelta | GenerationOutput,
    events: AsyncIterator,
    store: FeedbackStore,
    metrics: IngressMetrics,
    started: float,
) -> AsyncIterator[str]:
    """SSE data lines of a streamed completion, ending with ``[DONE]``."""
    fp = fingerprint(record.adapter_version)

    def chunk(choices: list[ChunkChoice], usage_: Usage | None = None) -> str:
        return ChatCompletionChunk(
            id=record.completion_id, created=int(record.created), model=record.model,
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
            yield chunk([ChunkChoice(index=event.choice_index, delta=DeltaMessage(content=event.text))])
        elif isinstance(event, GenerationFailure):
            yield json.dumps({"error": {"message": event.message, "type": "server_error",
                                        "param": event.param, "code": event.code}})
            return
        elif isinstance(event, GenerationOutput):
            await store.save_completion(filled(record, event))
            observe_completion(metrics, event, started, stream=True)
            yield chunk([ChunkChoice(index=i, delta=DeltaMessage(), finish_reason=reason)
                         for i, reason in enumerate(event.finish_reasons)])
            if body.stream_options and body.stream_options.include_usage:
                yield chunk([], usage(event))
            yield "[DONE]"
            return
        event = await anext(events)
