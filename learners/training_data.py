"""Per-user training data in Redis, built from feedback events exactly once.

Where they live (``examples``, ``applied``, ``value_head``, ``reward`` under the
user's keys, and the users' pending counts) is ``contracts.keys``'s.

An example copies what training needs out of the completion (which expires):
the base-model features of every choice and the prompt's token ids. A
correction's example adds one more row, the base-model features of the text the
user wrote, and ranks it above the choice it corrects.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from contracts.records import DEFAULT_CRITERION, CompletionRecord, FeedbackEvent


@dataclass
class TrainingExample:
    event_id: str
    kind: str  # "thumbs" | "score" | "ranking" | "correction"
    completion_id: str
    accepted_at: float
    prompt_token_ids: list[int]
    # (n_choices, D) float32, base-model features of each choice; a correction's
    # example has one more row (n_choices + 1, D): the corrected text, last
    features: np.ndarray
    choice: int | None = None  # thumbs, score, correction: the judged choice
    label: int | None = None  # thumbs: 1 up, 0 down
    ranking: list[int] | None = None  # best first: a ranking's, or [correction row, choice]
    score: int | None = None  # thumbs (optional), score: 1-10
    criterion: str = DEFAULT_CRITERION

    def to_json(self) -> str:
        features = np.ascontiguousarray(self.features, dtype="<f4")
        return json.dumps({
            "event_id": self.event_id, "kind": self.kind, "completion_id": self.completion_id,
            "accepted_at": self.accepted_at, "prompt_token_ids": self.prompt_token_ids,
            "features": base64.b64encode(features.tobytes()).decode(), "shape": features.shape,
            "choice": self.choice, "label": self.label, "ranking": self.ranking,
            "score": self.score, "criterion": self.criterion,
        })

    @classmethod
    def from_json(cls, raw: str | bytes) -> TrainingExample:
        data = json.loads(raw)
        features = np.frombuffer(base64.b64decode(data.pop("features")), dtype="<f4")
        return cls(features=features.reshape(data.pop("shape")), **data)


def example_from(event_id: str, event: FeedbackEvent, completion: CompletionRecord,
                 correction_features: np.ndarray | None = None) -> TrainingExample:
    """The example of one event; a correction's needs its text's features (D,)."""
    if completion.features is None:
        raise ValueError(f"completion {completion.completion_id} has no features recorded")
    features, ranking = completion.features, event.ranking
    if event.type == "correction":
        if correction_features is None:
            raise ValueError("a correction's example needs the features of its text")
        features = np.concatenate([features, correction_features[None].astype(np.float32)])
        ranking = [len(completion.choices), event.choice]
    return TrainingExample(
        event_id=event_id,
        kind=event.type,
        completion_id=event.completion_id,
        accepted_at=event.accepted_at,
        prompt_token_ids=completion.prompt_token_ids,
        features=features,
        choice=event.choice,
        label=None if event.value is None else int(event.value == "up"),
        ranking=ranking,
        score=event.score,
        criterion=event.criterion,
    )
