"""Consume the feedback stream: at-least-once delivery, exactly-once effect.

Every learner worker is a consumer in one consumer group. An event becomes a
training example and is acknowledged in one Lua script: the event id goes into
the user's ``applied`` set first, so an event delivered twice (a worker died
after applying but before acknowledging, or two workers raced on a reclaimed
entry) is acknowledged the second time without being applied again. Entries a
dead worker left pending are taken over with ``XAUTOCLAIM`` after
``reclaim_idle_ms``.

A correction carries text no model has read yet: ``answer_features`` (the
learner's base model) computes its features when the event is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis

from contracts.keys import (
    FEEDBACK_GROUP,
    FEEDBACK_STREAM,
    LEARNER_STATS_KEY,
    PENDING_KEY,
    PENDING_SINCE_KEY,
    applied_key,
    completion_key,
    examples_key,
    forgotten_key,
)
from contracts.records import CompletionRecord, FeedbackEvent
from learners.training_data import example_from

log = logging.getLogger(__name__)

# KEYS: applied set, examples list, pending zset, stream, pending-since zset
# ARGV: event id, example json, user id, group, accepted at
_APPLY = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('ZINCRBY', KEYS[3], 1, ARGV[3])
  redis.call('ZADD', KEYS[5], 'NX', ARGV[5], ARGV[3])
end
redis.call('XACK', KEYS[4], ARGV[4], ARGV[1])
return 1
"""


@dataclass
class PollResult:
    applied: int = 0
    reclaimed: int = 0
    dropped: int = 0  # events whose completion expired or whose user was forgotten


# (prompt token ids, answer text) -> the answer's base-model features (D,)
AnswerFeatures = Callable[[list[int], str], np.ndarray]


class FeedbackConsumer:
    def __init__(self, client: redis.Redis, consumer: str, reclaim_idle_ms: int = 60_000,
                 answer_features: AnswerFeatures | None = None) -> None:
        self.client = client
        self.consumer = consumer
        self.reclaim_idle_ms = reclaim_idle_ms
        self.answer_features = answer_features
        self._apply = client.register_script(_APPLY)
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            # id 0: events accepted before any learner ran are trained on too
            self.client.xgroup_create(FEEDBACK_STREAM, FEEDBACK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def poll(self, count: int = 100, block_ms: int = 1000) -> PollResult:
        """Reclaim stale entries, then read new ones; apply and acknowledge each."""
        result = PollResult()
        _, claimed, _deleted = self.client.xautoclaim(
            FEEDBACK_STREAM, FEEDBACK_GROUP, self.consumer, self.reclaim_idle_ms, "0-0", count=count
        )
        result.reclaimed = len(claimed)
        entries = list(claimed)
        fresh = self.client.xreadgroup(
            FEEDBACK_GROUP, self.consumer, {FEEDBACK_STREAM: ">"}, count=count, block=block_ms
        )
        for _stream, stream_entries in fresh or []:
            entries.extend(stream_entries)
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream (its user was forgotten)
                self.client.xack(FEEDBACK_STREAM, FEEDBACK_GROUP, entry_id)
                continue
            if self.apply(entry_id.decode(), FeedbackEvent.from_stream(fields)):
                result.applied += 1
            else:
                result.dropped += 1
        return result

    def apply(self, event_id: str, event: FeedbackEvent) -> bool:
        """Turn one event into a training example (once) and acknowledge it."""
        raw = self.client.hgetall(completion_key(event.completion_id))
        forgotten_at = self.client.get(forgotten_key(event.user_id))
        if not raw or (forgotten_at is not None and event.accepted_at <= float(forgotten_at)):
            self.client.xack(FEEDBACK_STREAM, FEEDBACK_GROUP, event_id)
            self.client.hincrby(LEARNER_STATS_KEY, "events_dropped", 1)
            return False
        completion = CompletionRecord.from_redis(event.completion_id, raw)
        example = example_from(event_id, event, completion, self._correction_features(event, completion))
        self._apply(
            keys=[applied_key(event.user_id), examples_key(event.user_id), PENDING_KEY,
                  FEEDBACK_STREAM, PENDING_SINCE_KEY],
            args=[event_id, example.to_json(), event.user_id, FEEDBACK_GROUP, event.accepted_at],
        )
        return True

    def _correction_features(self, event: FeedbackEvent,
                             completion: CompletionRecord) -> np.ndarray | None:
        if event.correction is None:
            return None
        if self.answer_features is None:  # left pending: a learner with a model takes it
            raise RuntimeError("a correction needs a consumer with answer_features")
        return self.answer_features(completion.prompt_token_ids, event.correction)
