"""Feedback consumption: at-least-once delivery, exactly-once effect, reclaim."""

import asyncio
import time

import numpy as np
import pytest

from contracts.keys import (
    FEEDBACK_GROUP,
    FEEDBACK_STREAM,
    PENDING_KEY,
    PENDING_SINCE_KEY,
    applied_key,
    examples_key,
)
from contracts.records import ChoiceRecord, CompletionRecord, FeedbackEvent
from learners.feedback_consumer import FeedbackConsumer
from learners.training_data import TrainingExample
from service.feedback_store import FeedbackStore


def accept(url: str, events: list[FeedbackEvent], completions: list[CompletionRecord]) -> list[str]:
    async def go():
        store = FeedbackStore.from_url(url, 3600)
        for record in completions:
            await store.save_completion(record)
        ids = [(await store.append_feedback(e, None)).event_id for e in events]
        await store.client.aclose()
        return ids

    return asyncio.run(go())


def completion(cid: str, user: str = "alice", n: int = 3) -> CompletionRecord:
    return CompletionRecord(cid, user, "m", None, [{"role": "user", "content": "q"}], [1, 2, 3],
                            [ChoiceRecord(f"c{i}", [4 + i], "stop") for i in range(n)],
                            features=np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32))


def test_each_event_becomes_one_example_with_its_features(redis_server, redis_client):
    record = completion("c1")
    ids = accept(redis_server.url, [FeedbackEvent("alice", "c1", "ranking", ranking=[2, 0, 1]),
                                    FeedbackEvent("alice", "c1", "thumbs", choice=1, value="down")], [record])
    consumer = FeedbackConsumer(redis_client, "w1")
    assert consumer.poll(block_ms=10).applied == 2
    examples = [TrainingExample.from_json(r) for r in redis_client.lrange(examples_key("alice"), 0, -1)]
    assert [e.event_id for e in examples] == ids
    assert examples[0].ranking == [2, 0, 1] and examples[1].label == 0 and examples[1].choice == 1
    np.testing.assert_array_equal(examples[0].features, record.features)
    assert redis_client.zscore(PENDING_KEY, "alice") == 2
    # the scheduler's waiting time starts at the oldest pending example's acceptance
    assert redis_client.zscore(PENDING_SINCE_KEY, "alice") == pytest.approx(
        min(e.accepted_at for e in examples), abs=1e-3)
    assert redis_client.xpending(FEEDBACK_STREAM, FEEDBACK_GROUP)["pending"] == 0


def test_an_event_delivered_twice_is_applied_once(redis_server, redis_client):
    [event_id] = accept(redis_server.url, [FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up")],
                        [completion("c1")])
    consumer = FeedbackConsumer(redis_client, "w1")
    event = FeedbackEvent.from_stream(redis_client.xrange(FEEDBACK_STREAM)[0][1])
    consumer.apply(event_id, event)
    consumer.apply(event_id, event)  # e.g. a worker died between apply and ack, then a retry
    assert redis_client.llen(examples_key("alice")) == 1
    assert redis_client.scard(applied_key("alice")) == 1
    assert redis_client.zscore(PENDING_KEY, "alice") == 1


def test_events_a_dead_consumer_left_pending_are_reclaimed(redis_server, redis_client):
    accept(redis_server.url, [FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up")], [completion("c1")])
    FeedbackConsumer(redis_client, "dead")  # creates the group
    redis_client.xreadgroup(FEEDBACK_GROUP, "dead", {FEEDBACK_STREAM: ">"}, count=10)  # read, then "crash"
    assert redis_client.xpending(FEEDBACK_STREAM, FEEDBACK_GROUP)["pending"] == 1
    survivor = FeedbackConsumer(redis_client, "alive", reclaim_idle_ms=50)
    assert survivor.poll(block_ms=10).applied == 0  # too fresh to reclaim
    time.sleep(0.1)
    result = survivor.poll(block_ms=10)
    assert (result.reclaimed, result.applied) == (1, 1)
    assert redis_client.xpending(FEEDBACK_STREAM, FEEDBACK_GROUP)["pending"] == 0
    assert redis_client.llen(examples_key("alice")) == 1


def test_feedback_on_an_expired_completion_is_dropped_not_retried(redis_server, redis_client):
    accept(redis_server.url, [FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up")], [completion("c1")])
    redis_client.delete("tailor:completion:c1")  # expired between acceptance and training
    result = FeedbackConsumer(redis_client, "w1").poll(block_ms=10)
    assert (result.applied, result.dropped) == (0, 1)
    assert redis_client.xpending(FEEDBACK_STREAM, FEEDBACK_GROUP)["pending"] == 0
    assert redis_client.llen(examples_key("alice")) == 0


def test_events_accepted_before_a_forget_are_not_trained_on(redis_server, redis_client):
    accept(redis_server.url, [FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up",
                                            accepted_at=time.time() - 10)], [completion("c1")])
    redis_client.set("tailor:forgotten:alice", f"{time.time():.3f}")
    assert FeedbackConsumer(redis_client, "w1").poll(block_ms=10).dropped == 1
    assert redis_client.llen(examples_key("alice")) == 0


@pytest.mark.parametrize("kind", ["thumbs", "ranking"])
def test_training_example_json_round_trip(kind):
    example = TrainingExample("1-0", kind, "c", 1.5, [1, 2], np.ones((3, 4), np.float32),
                              choice=1 if kind == "thumbs" else None, label=1 if kind == "thumbs" else None,
                              ranking=[2, 1, 0] if kind == "ranking" else None)
    again = TrainingExample.from_json(example.to_json())
    np.testing.assert_array_equal(again.features, example.features)
    assert (again.kind, again.choice, again.label, again.ranking) == (kind, example.choice, example.label,
                                                                       example.ranking)


def test_a_correction_waits_for_a_consumer_that_can_read_its_text(redis_server, redis_client):
    accept(redis_server.url, [FeedbackEvent("alice", "c1", "correction", choice=0, correction="x")],
           [completion("c1")])
    with pytest.raises(RuntimeError, match="needs a consumer with answer_features"):
        FeedbackConsumer(redis_client, "w1").poll(block_ms=10)
    assert redis_client.llen(examples_key("alice")) == 0
    assert redis_client.xpending(FEEDBACK_STREAM, FEEDBACK_GROUP)["pending"] == 1  # not lost
