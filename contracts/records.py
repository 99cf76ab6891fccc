"""What Tailor keeps in Redis for a completion and a judgment, and how it is encoded.

Both halves read these records: the service writes a completion when it answers
and appends feedback events; the learners read both back to build training
examples. Where each record lives is ``contracts.keys``'s business.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ChoiceRecord:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class CompletionRecord:
    completion_id: str
    user_id: str | None
    model: str
    adapter_version: str | None
    messages: list[dict[str, Any]]
    prompt_token_ids: list[int]
    choices: list[ChoiceRecord]
    features: np.ndarray | None = None  # (n, D) float32, base-model features per choice
    created: float = field(default_factory=time.time)

    def to_redis(self) -> dict[str, str | bytes]:
        fields: dict[str, str | bytes] = {
            "user_id": self.user_id or "",
            "model": self.model,
            "adapter_version": self.adapter_version or "",
            "messages": json.dumps(self.messages),
            "prompt_token_ids": json.dumps(self.prompt_token_ids),
            "choices": json.dumps([c.__dict__ for c in self.choices]),
            "n": str(len(self.choices)),
            "created": f"{self.created:.3f}",
        }
        if self.features is not None:
            features = np.ascontiguousarray(self.features, dtype="<f4")
            fields["features"] = features.tobytes()
            fields["feature_dim"] = str(features.shape[1])
        return fields

    @classmethod
    def from_redis(cls, completion_id: str, raw: dict[bytes, bytes]) -> CompletionRecord:
        text = {k.decode(): v for k, v in raw.items()}
        features = None
        if "features" in text:
            dim = int(text["feature_dim"])
            features = np.frombuffer(text["features"], dtype="<f4").reshape(-1, dim)
        return cls(
            completion_id=completion_id,
            user_id=text["user_id"].decode() or None,
            model=text["model"].decode(),
            adapter_version=text["adapter_version"].decode() or None,
            messages=json.loads(text["messages"]),
            prompt_token_ids=json.loads(text["prompt_token_ids"]),
            choices=[ChoiceRecord(**c) for c in json.loads(text["choices"])],
            features=features,
            created=float(text["created"]),
        )


# What a judgment is about (the RLHF criteria); operators may add names of their own
# (Settings.extra_feedback_criteria).
DEFAULT_CRITERION = "helpful"
BUILTIN_CRITERIA = (DEFAULT_CRITERION, "honest", "harmless")
# Not a matter of taste: learned from everyone by heads no user owns (learners.shared_heads).
SHARED_CRITERIA = ("harmless", "honest")


@dataclass
class FeedbackEvent:
    user_id: str
    completion_id: str
    type: str  # "thumbs" | "score" | "ranking" | "correction"
    choice: int | None = None  # thumbs, score, correction: the judged choice
    value: str | None = None  # thumbs: "up" | "down"
    ranking: list[int] | None = None  # ranking: choice indices, best first
    comment: str | None = None
    criterion: str = DEFAULT_CRITERION
    score: int | None = None  # score (and optionally thumbs): a graded rating, 1-10
    correction: str | None = None  # correction: the text the user wanted instead
    accepted_at: float = field(default_factory=time.time)

    def content_key(self) -> str:
        """Default idempotency key: the same judgment sent twice is recorded once."""
        parts = [self.completion_id, self.type, self.choice, self.value, self.ranking, self.comment]
        if self.criterion != DEFAULT_CRITERION or self.score is not None:
            # only then: the keys of judgments without them stay what they were
            parts += [self.criterion, self.score]
        if self.correction is not None:
            parts.append(self.correction)
        body = json.dumps(parts)
        return "content-" + hashlib.sha256(body.encode()).hexdigest()[:32]

    def to_stream(self, idempotency: str) -> dict[str, str]:
        fields = {
            "user_id": self.user_id,
            "completion_id": self.completion_id,
            "type": self.type,
            "idempotency_key": idempotency,
            "accepted_at": f"{self.accepted_at:.3f}",
        }
        if self.choice is not None:
            fields["choice"] = str(self.choice)
        if self.value is not None:
            fields["value"] = self.value
        if self.ranking is not None:
            fields["ranking"] = json.dumps(self.ranking)
        if self.comment:
            fields["comment"] = self.comment
        fields["criterion"] = self.criterion
        if self.score is not None:
            fields["score"] = str(self.score)
        if self.correction is not None:
            fields["correction"] = self.correction
        return fields

    @classmethod
    def from_stream(cls, raw: dict[bytes, bytes]) -> FeedbackEvent:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            user_id=text["user_id"],
            completion_id=text["completion_id"],
            type=text["type"],
            choice=int(text["choice"]) if "choice" in text else None,
            value=text.get("value"),
            ranking=json.loads(text["ranking"]) if "ranking" in text else None,
            comment=text.get("comment"),
            # events recorded before criteria existed were about helpfulness
            criterion=text.get("criterion", DEFAULT_CRITERION),
            score=int(text["score"]) if "score" in text else None,
            correction=text.get("correction"),
            accepted_at=float(text["accepted_at"]),
        )

    @property
    def counter_field(self) -> str:
        """The user's counter of judgments of this kind (``FeedbackCounts``)."""
        if self.type == "thumbs":
            return f"thumbs_{self.value}"
        return {"score": "scores", "ranking": "rankings", "correction": "corrections"}[self.type]

    @property
    def criterion_field(self) -> str:
        """The user's counter of judgments about this criterion."""
        return f"criterion:{self.criterion}"
