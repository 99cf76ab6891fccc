"""``POST /v1/integrations/openwebui/events``: Open WebUI's message ratings, as judgments.

Tailor's Open WebUI function (``deploy/openwebui/tailor_feedback.py``) sends
each ``feedback.created`` / ``feedback.updated`` event with its feedback record;
``service.openwebui_feedback`` says what the rating means here. The rated
message is tied to Tailor's completion by the message id the chat request
carried (``service.openwebui_message``). Every check runs before the first
write, so a refused event changes nothing; each judgment is appended under an
idempotency key derived from the feedback, so a resent event is recorded once.

The sender is Open WebUI, not a user: it authenticates with
``TAILOR_OPENWEBUI_SECRET`` or a gateway key, and the user is the feedback's
owner, who must be the user the completion was served to.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Body, Header, Response

from contracts.records import FeedbackEvent
from contracts.settings import Settings
from service.deps import MetricsDep, SettingsDep, StoreDep
from service.errors import APIError
from service.feedback_store import CompletionExpired
from service.identity import validate_user_id
from service.openwebui_feedback import (
    FEEDBACK_EVENTS,
    NotAJudgment,
    OpenWebUIEvent,
    OpenWebUIEventAccepted,
    RecordedJudgment,
    judgments,
    not_recorded,
)

router = APIRouter(tags=["integrations"])


@router.post("/v1/integrations/openwebui/events", status_code=201)
async def openwebui_event(
    response: Response,
    body: Annotated[OpenWebUIEvent, Body()],
    settings: SettingsDep,
    store: StoreDep,
    metrics: MetricsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> OpenWebUIEventAccepted:
    authenticate(settings, authorization)
    if body.event not in FEEDBACK_EVENTS:
        response.status_code = 200
        return OpenWebUIEventAccepted(event=body.event, not_recorded=[
            f"event {body.event[:60]!r}: Tailor takes only {' and '.join(FEEDBACK_EVENTS)}"])
    feedback = body.feedback
    if feedback is None:
        raise APIError(
            422, "the event has no feedback record: Open WebUI's own webhook sends only the "
            "thumb and the feedback id, not the rated message; install Tailor's function "
            "(deploy/openwebui/tailor_feedback.py) and send its events instead",
            param="feedback", code="missing_feedback",
        )
    subject_id = (body.subject or {}).get("id")
    if subject_id is not None and subject_id != feedback.id:
        raise APIError(422, f"subject.id {str(subject_id)[:64]!r} is not the feedback's id "
                       f"{feedback.id[:64]!r}", param="subject.id", code="invalid_value")
    if feedback.type != "rating":
        response.status_code = 200
        return OpenWebUIEventAccepted(event=body.event, not_recorded=[
            f"feedback of type {feedback.type[:40]!r}: Tailor takes message ratings"])
    user_id = validate_user_id(feedback.user_id, "feedback.user_id")
    message_id = feedback.meta.message_id if feedback.meta else None
    if not message_id:
        raise APIError(422, "feedback.meta.message_id is missing: which message was rated?",
                       param="feedback.meta.message_id", code="invalid_value")
    try:
        found = judgments(feedback, settings.feedback_criteria, settings.max_comment_chars)
    except NotAJudgment as err:
        raise APIError(422, str(err), param=f"feedback.{err.field}",
                       code="invalid_value") from None
    completion_id = await store.openwebui_completion(user_id, message_id)
    if completion_id is None:
        raise APIError(
            404, f"Open WebUI message {message_id[:64]!r} of user {user_id!r} has no Tailor "
            "completion: it was not answered by Tailor with the X-OpenWebUI-Message-Id header "
            "template (README, 'Use it with Open WebUI'), or it expired or was forgotten",
            param="feedback.meta.message_id", code="message_not_found",
        )
    try:
        record = await store.load_completion(completion_id)
    except CompletionExpired:
        raise APIError(404, f"completion {completion_id!r} of Open WebUI message "
                       f"{message_id[:64]!r} expired", param="feedback.meta.message_id",
                       code="completion_not_found") from None
    if record.user_id != user_id:  # the link is kept per user; a guard, not a path
        raise APIError(403, "the rated completion is another user's",
                       param="feedback.user_id", code="not_your_completion")

    recorded = []
    for judgment in found:
        event = FeedbackEvent(user_id, completion_id, judgment.type, choice=0,
                              value=judgment.value, score=judgment.score,
                              criterion=judgment.criterion, comment=judgment.comment)
        try:
            result = await store.append_feedback(event, judgment.idempotency_key)
        except CompletionExpired:
            raise APIError(404, "the completion expired meanwhile",
                           param="feedback.meta.message_id") from None
        metrics.feedback.labels(type=judgment.type,
                                outcome="duplicate" if result.duplicate else "recorded").inc()
        recorded.append(RecordedJudgment(id=result.event_id, type=judgment.type,
                                         criterion=judgment.criterion,
                                         duplicate=result.duplicate))
    if all(j.duplicate for j in recorded):
        response.status_code = 200  # a resend, or an update that changed no judgment
    notes = not_recorded(feedback, settings.feedback_criteria)
    if not found:
        notes.append("neither a thumb nor a 1-10 rating: nothing to record")
    return OpenWebUIEventAccepted(event=body.event, completion_id=completion_id,
                                  judgments=recorded, not_recorded=notes)


def authenticate(settings: Settings, authorization: str | None) -> None:
    """Open WebUI's function holds the shared secret, or the gateway key of its connection."""
    accepted = [key for key in (settings.openwebui_secret, *settings.gateway_keys) if key]
    if not accepted:
        raise APIError(
            401, "the Open WebUI intake is closed: set TAILOR_OPENWEBUI_SECRET (or "
            "TAILOR_GATEWAY_KEYS) and give the same value to Tailor's Open WebUI function",
            code="invalid_api_key",
        )
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "missing credentials: send Authorization: Bearer <secret>",
                       code="invalid_api_key")
    # every key is compared, so the time taken does not tell which one came close
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in accepted]
    if not any(matches):
        raise APIError(401, "wrong Open WebUI secret", code="invalid_api_key")
