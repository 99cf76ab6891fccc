"""``POST /v1/feedback``: a user's judgment of one of their completions.

Accepted judgments are appended to the feedback stream exactly once per
idempotency key (``FeedbackStore.append_feedback``); the learners take it from there.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Response

from contracts.records import CompletionRecord, FeedbackEvent
from service.deps import CallerDep, MetricsDep, SettingsDep, StoreDep
from service.errors import APIError
from service.feedback_store import CompletionExpired
from service.schemas import (
    ChoiceJudgment,
    CorrectionFeedback,
    FeedbackAccepted,
    FeedbackRequest,
    RankingFeedback,
)

MAX_IDEMPOTENCY_KEY = 255

router = APIRouter(tags=["feedback"])


@router.post("/v1/feedback", status_code=201)
async def feedback(
    response: Response,
    body: Annotated[FeedbackRequest, Body()],
    settings: SettingsDep,
    caller: CallerDep,
    store: StoreDep,
    metrics: MetricsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> FeedbackAccepted:
    if caller is None:
        raise APIError(401, "feedback needs a user: API key, X-User-Id header", code="no_user")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise APIError(422, "Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    check_length("comment", body.comment, settings.max_comment_chars)
    if isinstance(body, CorrectionFeedback):
        check_length("correction", body.correction, settings.max_correction_chars)
    if body.criterion not in settings.feedback_criteria:
        raise APIError(
            422, f"criterion {body.criterion[:40]!r} is not one this server takes; use one of "
            f"{', '.join(settings.feedback_criteria)}", param="criterion", code="invalid_value",
        )
    try:
        record = await store.load_completion(body.completion_id)
    except CompletionExpired:
        raise APIError(
            404, f"completion {body.completion_id!r} is unknown or expired",
            param="completion_id", code="completion_not_found",
        ) from None
    if record.user_id != caller:
        raise APIError(
            403, "you can only rate your own completions", param="completion_id",
            code="not_your_completion",
        )
    event = feedback_event(body, record, caller)
    try:
        result = await store.append_feedback(event, idempotency_key)
    except CompletionExpired:
        raise APIError(404, "the completion expired meanwhile", param="completion_id") from None
    outcome = "duplicate" if result.duplicate else "recorded"
    metrics.feedback.labels(type=body.type, outcome=outcome).inc()
    if result.duplicate:
        response.status_code = 200
    return FeedbackAccepted(id=result.event_id, completion_id=body.completion_id,
                            duplicate=result.duplicate)


def check_length(field: str, text: str | None, limit: int) -> None:
    if text and len(text) > limit:
        raise APIError(413, f"{field} has {len(text)} characters; the limit is {limit}",
                       param=field, code=f"{field}_too_long")


def feedback_event(body: FeedbackRequest, record: CompletionRecord, user_id: str) -> FeedbackEvent:
    """The stream record of a judgment that is valid for this completion."""
    n = len(record.choices)
    if isinstance(body, ChoiceJudgment) and body.choice >= n:
        raise APIError(
            422, f"choice {body.choice} is out of range: the completion has {n} choice(s)",
            param="choice", code="invalid_value",
        )
    if isinstance(body, RankingFeedback):
        if n < 2:
            raise APIError(
                422, "a ranking needs a completion with 2 or more choices (ask with n>1); "
                "rate a single answer with thumbs", param="ranking", code="invalid_value",
            )
        if sorted(body.ranking) != list(range(n)):
            raise APIError(
                422, f"ranking {body.ranking} must list each of the {n} choice indices "
                f"0..{n - 1} exactly once, best first", param="ranking", code="invalid_value",
            )
    # the request's fields are the event's (choice, value, score, ranking, correction, ...)
    return FeedbackEvent(user_id, body.completion_id, body.type,
                         **body.model_dump(exclude={"type", "completion_id"}))
