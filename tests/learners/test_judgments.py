"""Each kind of judgment as the reward model learns it: thumbs, scores, rankings, corrections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.records import ChoiceRecord, CompletionRecord, FeedbackEvent
from learners.judgments import reward_events
from learners.reward_config import RewardConfig
from learners.reward_data import FeedbackBuilder, RankingEvent, ThumbEvent
from learners.reward_model import RewardModel
from learners.training_data import TrainingExample, example_from

DIM = 8


def example(kind: str, completion_id: str, features: np.ndarray, **fields) -> TrainingExample:
    return TrainingExample("0-1", kind, completion_id, 0.0, [1, 2], features, **fields)


def test_scores_on_one_completion_become_pairs_that_weigh_one_ranking() -> None:
    features = np.eye(3, DIM, dtype=np.float32)  # choice i is the unit vector e_i
    examples = [
        example("thumbs", "c", features, choice=0, label=1, score=9),
        example("thumbs", "c", features, choice=1, label=1, score=4),
        example("thumbs", "c", features, choice=2, label=1, score=4),  # a tie: no pair ...
        example("score", "c", features, choice=2, score=6),  # ... until rescored: last counts
    ]
    events = reward_events("alice", examples)
    thumbs = [e for e in events if isinstance(e, ThumbEvent)]
    # each score a graded label (the thumb's 1 refined by it)
    assert [e.label for e in thumbs] == pytest.approx([8 / 9, 3 / 9, 3 / 9, 5 / 9])
    pairs = [e for e in events if isinstance(e, RankingEvent)]
    order = [tuple(int(row.argmax()) for row in e.features) for e in pairs]
    assert sorted(order) == [(0, 1), (0, 2), (2, 1)]  # 9 > 4, 9 > 6, 6 > 4
    data = FeedbackBuilder(DIM)
    for event in pairs:
        data.add(event)
    assert data.build().pair_weight.sum().item() == pytest.approx(1.0)  # one ranking's weight


def test_a_correction_is_preferred_over_the_choice_it_corrects() -> None:
    completion = CompletionRecord("c", "alice", "m", None, [{"role": "user", "content": "q"}],
                                  [1, 2], [ChoiceRecord(f"a{i}", [3 + i], "stop") for i in range(2)],
                                  features=np.eye(2, DIM, dtype=np.float32))
    event = FeedbackEvent("alice", "c", "correction", choice=1, correction="what I wanted")
    written = np.full(DIM, 7.0, dtype=np.float32)  # the corrected text's features
    made = example_from("0-1", event, completion, correction_features=written)
    again = TrainingExample.from_json(made.to_json())
    assert again.features.shape == (3, DIM) and again.ranking == [2, 1]
    (pair,) = reward_events("alice", [again])
    assert isinstance(pair, RankingEvent)
    np.testing.assert_array_equal(pair.features[0].numpy(), written)  # best first
    np.testing.assert_array_equal(pair.features[1].numpy(), completion.features[1])
    with pytest.raises(ValueError, match="needs the features of its text"):
        example_from("0-1", event, completion)


def held_out_order_accuracy(with_scores: bool) -> float:
    """Users who like every answer (thumbs up on all 4 choices) and say how much with a
    score; how often the learned reward orders new answers as their taste does."""
    generator = torch.Generator().manual_seed(0)
    taste = torch.zeros(DIM)
    taste[0], taste[1] = 1.0, 0.5
    builder = FeedbackBuilder(DIM)
    for user in range(6):
        examples = []
        for prompt in range(20):
            choices = torch.randn(4, DIM, generator=generator)
            ranks = torch.argsort(torch.argsort(choices @ taste))  # 0 = liked least
            for choice, rank in enumerate(ranks.tolist()):
                examples.append(example("thumbs", f"p{prompt}", choices.numpy(), choice=choice,
                                        label=1, score=4 + 2 * rank if with_scores else None))
        for event in reward_events(f"u{user}", examples):
            builder.add(event)
    model = RewardModel.fit(builder.build(), RewardConfig(rank=2, steps=150, seed=0))
    right = 0.0
    for user in range(6):
        for _ in range(20):
            choices = torch.randn(4, DIM, generator=generator)
            best_first = choices[torch.argsort(choices @ taste, descending=True)]
            right += model.event_accuracy(RankingEvent(f"u{user}", "held-out", best_first))
    return right / 120


def test_thumbs_up_with_scores_teach_which_liked_answer_is_liked_most() -> None:
    with_scores, thumbs_only = held_out_order_accuracy(True), held_out_order_accuracy(False)
    assert with_scores >= 0.8, with_scores
    assert thumbs_only <= 0.65, thumbs_only  # all "up": thumbs alone carry no order
