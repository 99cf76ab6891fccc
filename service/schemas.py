"""Request and response models of the HTTP API (OpenAI-compatible where OpenAI has one).

Input models validate at the boundary; limits that depend on settings (``n``,
``max_tokens``, comment length) are checked in ``api.py`` against ``Settings``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# --- chat completions (input) -----------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # OpenAI clients send fields we do not use (logprobs=False, ...): accept them.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, description="Choices to generate (to be ranked by the user).")
    compare: bool = Field(False, description=(
        "Tailor's extension: the user will compare these choices. Each is chosen from "
        "several candidates by Thompson sampling of the user's reward, so the comparison "
        "teaches the most (service.comparison); not for streamed requests."))
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = Field(None, description="End-user id (least trusted identity source).")
    safety_identifier: str | None = Field(None, description="End-user id (OpenAI's newer name).")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# --- chat completions (output) ----------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str = Field(description="The adapter version that produced the answer.")


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tailor"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- feedback ---------------------------------------------------------------------------


class Judgment(BaseModel):
    """What every judgment has: the completion it is about, its criterion, a comment."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=128)
    criterion: str = Field("helpful", description="What the judgment is about: helpful, "
                           "honest, harmless, or a criterion the operator added.")
    comment: str | None = None


class ChoiceJudgment(Judgment):
    """A judgment of one choice of the completion."""

    choice: int = Field(0, ge=0, description="Index of the judged choice.")


class ThumbsFeedback(ChoiceJudgment):
    type: Literal["thumbs"]
    value: Literal["up", "down"]
    score: int | None = Field(None, ge=1, le=10, description="A graded rating, 1-10.")


class ScoreFeedback(ChoiceJudgment):
    """A graded rating without a thumb (LangSmith's ``score``, Langfuse's numeric score)."""

    type: Literal["score"]
    score: int = Field(ge=1, le=10, description="A graded rating, 1 (worst) to 10 (best).")


class RankingFeedback(Judgment):
    type: Literal["ranking"]
    ranking: list[int] = Field(description="All choice indices of the completion, best first.")


class CorrectionFeedback(ChoiceJudgment):
    """The answer the user wanted instead of one choice (LangSmith's ``correction``)."""

    type: Literal["correction"]
    correction: str = Field(min_length=1, description="The text the user wanted instead.")

    @field_validator("correction")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("correction is blank: write the answer you wanted")
        return text


FeedbackRequest = Annotated[ThumbsFeedback | ScoreFeedback | RankingFeedback | CorrectionFeedback,
                            Field(discriminator="type")]
# The union's tags: pydantic puts the tag first in the location of an error
FEEDBACK_TYPES = ("thumbs", "score", "ranking", "correction")


class FeedbackAccepted(BaseModel):
    id: str = Field(description="The event's id in the feedback stream.")
    object: Literal["feedback"] = "feedback"
    completion_id: str
    duplicate: bool = Field(description="True when this event had been recorded already.")


# --- gold checks --------------------------------------------------------------------------


class GoldCheckView(BaseModel):
    id: str = Field(description="The check's id: answer it at POST "
                    "/v1/users/{user_id}/gold-checks/{id}.")
    object: Literal["gold_check"] = "gold_check"
    criterion: str = Field(description="What to judge the answer by: harmless or honest.")
    question: str = Field(description="The question to put to the rater.")
    prompt: str = Field(description="What was asked.")
    answer: str = Field(description="The answer to judge.")


class GoldCheckAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thumb: Literal["up", "down"] = Field(description="up: the answer keeps the criterion "
                                         "(harmless, honest); down: it breaks it.")


class GoldCheckAnswered(BaseModel):
    check_id: str
    object: Literal["gold_check.answer"] = "gold_check.answer"
    duplicate: bool = Field(description="True when you had answered this check already: "
                            "your first answer stands.")


# --- users ------------------------------------------------------------------------------


class FeedbackCounts(BaseModel):
    thumbs_up: int = 0
    thumbs_down: int = 0
    rankings: int = 0
    scores: int = 0
    corrections: int = 0
    total: int = 0
    by_criterion: dict[str, int] = Field(
        default_factory=dict, description="Judgments per criterion (helpful, honest, ...).")
    gold_checks: int = Field(0, description="Gold checks answered (not counted in total: "
                             "they judge no answer of yours).")


class TrainingStatus(BaseModel):
    pending: int = Field(description="Judgments the learners have not trained on yet.")
    until_next_update: int = Field(
        description="Judgments still needed before the learners update the adapter (0: due "
        "now, waiting for a learner).")


class JudgmentsInHour(BaseModel):
    hour: int = Field(description="The hour's start, unix seconds (UTC).")
    judgments: int


class RaterStanding(BaseModel):
    reliability: float | None = Field(
        description="How reliable your judgments of this criterion are, as estimated against "
        "everyone's consensus: balanced accuracy, 0.5 a coin, 1 always right; null before "
        "the shared heads were fitted on them.")
    judgments_used: int = Field(
        description="Your judgments of this criterion the shared head learned from.")
    gold_checks_used: int = Field(
        0, description="Your answers to gold checks of this criterion (answers whose verdict "
        "is known) that the reliability estimate used.")


class UserView(BaseModel):
    user_id: str
    adapter_version: str | None
    feedback: FeedbackCounts
    training: TrainingStatus
    rater: dict[str, RaterStanding] = Field(
        default_factory=dict, description="Per shared criterion (harmless, honest): how the "
        "heads shared by everyone weigh your judgments of it.")
    history: list[JudgmentsInHour] = Field(
        default_factory=list, description="Judgments accepted per hour, oldest first.")
    learner: dict[str, float | str] = Field(
        default_factory=dict, description="Latest learner metrics (reward, KL, losses, lag; "
        "reward_accuracy: your judgments predicted before training on them; population_weight: "
        "how much your taste judgments count in the reward everyone starts from, by your "
        "agreement with everyone else's, 0-1)."
    )


class UserForgotten(BaseModel):
    user_id: str
    deleted: bool = True
