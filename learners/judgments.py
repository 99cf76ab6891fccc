"""How each kind of judgment teaches the user's reward model.

A user's `TrainingExample`s become reward-model events (`learners.reward_data`):

- thumbs: a label on the rated choice, 1 up, 0 down;
- a score, with or without a thumb: a graded label on the choice instead (`score_label`:
  1 → 0, 10 → 1). A 1-10 scale is absolute: "up, 10" and "up, 6" on answers to two
  different prompts still say which the user likes more, which two thumbs-up cannot;
  where the score and the thumb disagree, the score is the more specific of the two;
- scores on choices of one completion (with or without thumbs): the higher-scored
  choice preferred over the lower, as Bradley–Terry pairs that together weigh one
  ranking — so a user who only gives thumbs-up with scores still says which liked
  answer they like most. A choice's last score counts; equal scores give no pair;
- ranking: its pairs, best first;
- correction: the text the user wrote preferred over the choice it corrects.

Judgments of a shared criterion (harmless, honest) do not: those are not a matter
of taste, and train only the heads shared by everyone (learners.shared_heads), where
the user is one rater among all. Every other criterion (helpful, an operator's own)
trains the user's reward.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from contracts.records import SHARED_CRITERIA
from learners.reward_data import RankingEvent, RewardEvent, ThumbEvent, score_label
from learners.training_data import TrainingExample


def reward_events(user_id: str, examples: list[TrainingExample]) -> list[RewardEvent]:
    events: list[RewardEvent] = []
    scored: dict[str, dict[int, tuple[int, torch.Tensor]]] = {}  # completion → choice → score
    for example in examples:
        if example.criterion in SHARED_CRITERIA:
            continue
        features = torch.from_numpy(np.array(example.features))
        if example.kind in ("thumbs", "score"):
            label = (float(example.label) if example.score is None
                     else score_label(example.score))
            events.append(ThumbEvent(user_id, features[example.choice], label))
        else:  # ranking, correction
            events.append(RankingEvent(user_id, example.completion_id, features[example.ranking]))
        if example.score is not None:
            scored.setdefault(example.completion_id, {})[example.choice] = (
                example.score, features[example.choice])
    for completion_id, by_choice in scored.items():
        for (score_a, a), (score_b, b) in combinations(by_choice.values(), 2):
            if score_a != score_b:
                better, worse = (a, b) if score_a > score_b else (b, a)
                # one group per completion: its pairs share one ranking's weight
                events.append(RankingEvent(user_id, f"scores:{completion_id}",
                                           torch.stack([better, worse])))
    return events
