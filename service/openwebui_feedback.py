"""Open WebUI's message ratings as Tailor's judgments.

What Open WebUI 0.12 sends and what it means here. Its ``feedback.created`` /
``feedback.updated`` events (``open_webui/routers/evaluations.py``, built by
``open_webui/events.py``: ``build_event``) carry only ``data.rating`` and the
feedback's id; the message id, the 1-10 rating, the reason and the comment are
in the feedback record (``open_webui/models/feedbacks.py``, written by the chat
page, ``ResponseMessage.svelte`` ``feedbackHandler`` and ``RateComment.svelte``).
So Tailor's Open WebUI function (``deploy/openwebui/tailor_feedback.py``) sends
the event with that record added under ``feedback``, and this module maps it:

- ``data.rating`` 1 / -1 -> a thumb up / down (``thumbs``);
- ``data.details.rating`` 1-10 -> a ``score``;
- ``data.reason`` -> the criterion where one fits (``REASON_CRITERIA``, or a
  reason named like one of the server's criteria), else ``helpful``;
- ``data.comment`` -> the comment.

Open WebUI updates one feedback record several times for one rating: the
thumb creates it, generated tags update it, the 1-10 form updates it again.
Each judgment's idempotency key is therefore the feedback id plus what the
judgment says (the thumb's value and criterion; the score, criterion and
comment): a resent or merely re-tagged feedback is recorded once, while a
changed thumb or an edited score is a new judgment.

Pure: no Redis, no HTTP; the route (``service/routes/openwebui.py``) does both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.records import DEFAULT_CRITERION

FEEDBACK_EVENTS = ("feedback.created", "feedback.updated")

# Open WebUI's reasons (RateComment.svelte LIKE_REASONS / DISLIKE_REASONS) that are
# about truthfulness; every other one (style, length, instructions, refusals, effort,
# creativity) is about helpfulness, the default. None of its reasons is about harm.
REASON_CRITERIA = {
    "accurate_information": "honest",
    "not_factually_correct": "honest",
}

THUMBS = {1: "up", -1: "down"}


# --- what Open WebUI sends ----------------------------------------------------------------


class RatingDetails(BaseModel):
    model_config = ConfigDict(extra="ignore")

    rating: int | None = Field(None, description="The 1-10 rating (RateComment.svelte).")


class RatingData(BaseModel):
    """``FeedbackModel.data`` of a ``rating`` feedback (models/feedbacks.py ``RatingData``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    rating: int | str | None = Field(None, description="1 thumb up, -1 thumb down.")
    model_id: str | None = None
    sibling_model_ids: list[str] | None = Field(
        None, description="Arena: the models of the other answers to the same prompt.")
    reason: str | None = None
    comment: str | None = None
    details: RatingDetails | None = None


class FeedbackMeta(BaseModel):
    model_config = ConfigDict(extra="ignore")

    arena: bool | None = None
    chat_id: str | None = None
    message_id: str | None = None


class OpenWebUIFeedback(BaseModel):
    """Open WebUI's feedback record (``FeedbackModel``), without its chat snapshot."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, description="The Open WebUI user who rated.")
    type: str = Field(description="`rating` for message ratings.")
    data: RatingData | None = None
    meta: FeedbackMeta | None = None


class OpenWebUIEvent(BaseModel):
    """An Open WebUI event (``open_webui/events.py`` ``Event``), plus the feedback record
    Tailor's function adds to feedback events."""

    model_config = ConfigDict(extra="ignore")

    event: str = Field(description="The event's name, `feedback.created` for example.")
    id: str | None = Field(None, description="Open WebUI's id of this event.")
    subject: dict | None = None
    feedback: OpenWebUIFeedback | None = Field(
        None, description="The feedback record (added by Tailor's Open WebUI function).")


# --- what Tailor answers ------------------------------------------------------------------


class RecordedJudgment(BaseModel):
    id: str = Field(description="The event's id in the feedback stream.")
    type: Literal["thumbs", "score"]
    criterion: str
    duplicate: bool = Field(description="True when this judgment had been recorded already.")


class OpenWebUIEventAccepted(BaseModel):
    object: Literal["openwebui.event"] = "openwebui.event"
    event: str
    completion_id: str | None = Field(None, description="The completion the rating is about.")
    judgments: list[RecordedJudgment] = Field(default_factory=list)
    not_recorded: list[str] = Field(
        default_factory=list, description="Parts of the event Tailor does not take, and why.")


# --- the mapping --------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgment:
    """One judgment of the rated message's only choice, under its idempotency key."""

    type: Literal["thumbs", "score"]
    idempotency_key: str
    criterion: str = DEFAULT_CRITERION
    value: str | None = None  # thumbs
    score: int | None = None  # score
    comment: str | None = None


class NotAJudgment(ValueError):
    """The rating holds a value Tailor cannot take; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def criterion_of(reason: str | None, criteria: Sequence[str]) -> str:
    if not reason:
        return DEFAULT_CRITERION
    if reason in REASON_CRITERIA:
        return REASON_CRITERIA[reason]
    return reason if reason in criteria else DEFAULT_CRITERION


def judgments(
    feedback: OpenWebUIFeedback, criteria: Sequence[str], max_comment_chars: int
) -> list[Judgment]:
    """Tailor's judgments in one Open WebUI rating: a thumb and/or a 1-10 score."""
    data = feedback.data or RatingData()
    criterion = criterion_of(data.reason, criteria)
    # A comment longer than Tailor keeps is cut, not refused: refusing would drop the
    # rating it came with, and Open WebUI does not resend.
    comment = (data.comment or "").strip()[:max_comment_chars] or None
    found: list[Judgment] = []
    rating = _thumb(data.rating)
    if rating is not None:
        value = THUMBS[rating]
        found.append(Judgment(
            "thumbs", f"openwebui-{feedback.id}-thumbs-{value}-{criterion}",
            criterion=criterion, value=value, comment=comment,
        ))
    score = data.details.rating if data.details else None
    if score is not None:
        if not 1 <= score <= 10:
            raise NotAJudgment("data.details.rating", f"data.details.rating {score} is not a "
                               "1-10 rating")
        said = hashlib.sha256(json.dumps([score, criterion, comment]).encode()).hexdigest()[:24]
        found.append(Judgment(
            "score", f"openwebui-{feedback.id}-score-{said}",
            criterion=criterion, score=score, comment=comment,
        ))
    return found


def _thumb(rating: int | str | None) -> int | None:
    """1 / -1 (Open WebUI stores either an int or its string); None or 0: no thumb."""
    if rating is None or rating == "":
        return None
    try:
        value = int(rating)
    except ValueError:
        value = None
    if value == 0:
        return None
    if value not in THUMBS:
        raise NotAJudgment("data.rating", f"data.rating {str(rating)[:20]!r} is not a thumb: "
                           "Open WebUI sends 1 (up) or -1 (down)")
    return value


def not_recorded(feedback: OpenWebUIFeedback, criteria: Sequence[str]) -> list[str]:
    """What the rating holds that Tailor does not take (told back to the sender)."""
    data = feedback.data or RatingData()
    notes = []
    if (feedback.meta and feedback.meta.arena) or data.sibling_model_ids:
        notes.append(
            "comparison with sibling answers (arena or regenerated): Open WebUI names their "
            "models, not their messages, and a Tailor ranking orders the choices of one "
            "completion; the rating is recorded for the rated answer alone")
    if data.reason and criterion_of(data.reason, criteria) == DEFAULT_CRITERION:
        notes.append(f"reason {data.reason[:40]!r}: kept as its criterion, helpful")
    return notes
