"""The Redis data model against a real redis-server."""

import asyncio

import numpy as np
import pytest
import redis

from contracts.keys import FEEDBACK_STREAM, LEARNER_RECENT_KEY
from contracts.records import ChoiceRecord, CompletionRecord, FeedbackEvent
from service.feedback_store import CompletionExpired, FeedbackStore


def record(completion_id: str = "c1", user_id: str | None = "alice") -> CompletionRecord:
    return CompletionRecord(
        completion_id=completion_id, user_id=user_id, model="m", adapter_version="v1.ab",
        messages=[{"role": "user", "content": "hi"}], prompt_token_ids=[1, 2, 3],
        choices=[ChoiceRecord("a", [4], "stop"), ChoiceRecord("b", [5, 6], "length")],
        features=np.arange(8, dtype=np.float32).reshape(2, 4),
    )


def run(coro):
    return asyncio.run(coro)


async def with_store(url: str, fn, ttl: int = 3600):
    store = FeedbackStore.from_url(url, ttl)
    try:
        return await fn(store)
    finally:
        await store.client.aclose()


def test_completion_round_trips_with_features_and_ttl(redis_server, redis_client):
    async def go(store):
        await store.save_completion(record())
        return await store.load_completion("c1")

    loaded = run(with_store(redis_server.url, go))
    assert loaded.choices[1] == ChoiceRecord("b", [5, 6], "length")
    assert loaded.adapter_version == "v1.ab" and loaded.user_id == "alice"
    np.testing.assert_array_equal(loaded.features, record().features)
    assert 3500 < redis_client.ttl("tailor:completion:c1") <= 3600


def test_same_idempotency_key_is_recorded_once(redis_server, redis_client):
    async def go(store):
        await store.save_completion(record())
        up = FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up")
        first = await store.append_feedback(up, "key-1")
        again = await store.append_feedback(up, "key-1")
        other_key = await store.append_feedback(FeedbackEvent("alice", "c1", "thumbs", choice=1, value="down"), "key-2")
        same_content = await store.append_feedback(FeedbackEvent("alice", "c1", "thumbs", choice=1, value="down"), None)
        same_content_again = await store.append_feedback(FeedbackEvent("alice", "c1", "thumbs", choice=1, value="down"), None)
        return first, again, other_key, same_content, same_content_again

    first, again, other_key, same_content, same_content_again = run(with_store(redis_server.url, go))
    assert not first.duplicate and again.duplicate and again.event_id == first.event_id
    assert not other_key.duplicate
    assert not same_content.duplicate and same_content_again.duplicate
    assert redis_client.xlen(FEEDBACK_STREAM) == 3
    assert redis_client.hget("tailor:user:alice", "feedback_events") == b"3"


def test_feedback_on_a_missing_completion_writes_nothing(redis_server, redis_client):
    async def go(store):
        with pytest.raises(CompletionExpired):
            await store.append_feedback(FeedbackEvent("alice", "gone", "thumbs", choice=0, value="up"), "k")

    run(with_store(redis_server.url, go))
    assert list(redis_client.scan_iter()) == []


def test_forget_user_removes_their_data_and_only_theirs(redis_server, redis_client):
    redis_client.zadd(LEARNER_RECENT_KEY, {"alice": 1.0, "bob": 2.0})  # as the learners do

    async def go(store):
        await store.save_completion(record("c1", "alice"))
        await store.save_completion(record("c2", "bob"))
        await store.append_feedback(FeedbackEvent("alice", "c1", "ranking", ranking=[1, 0]), None)
        await store.append_feedback(FeedbackEvent("bob", "c2", "ranking", ranking=[0, 1]), None)
        await store.forget_user("alice")

    run(with_store(redis_server.url, go))
    keys = {k.decode() for k in redis_client.scan_iter()}
    assert not any("alice" in k and "forgotten" not in k for k in keys)
    assert "tailor:completion:c2" in keys
    entries = redis_client.xrange(FEEDBACK_STREAM)
    assert [e[1][b"user_id"] for e in entries] == [b"bob"]
    assert redis_client.zrange(LEARNER_RECENT_KEY, 0, -1) == [b"bob"]  # gone from /metrics too


def test_accepted_feedback_and_completions_survive_a_redis_crash(fresh_redis):
    """AOF with appendfsync always: SIGKILL right after the acknowledgement loses nothing."""

    async def go(store):
        await store.save_completion(record())
        return await store.append_feedback(FeedbackEvent("alice", "c1", "thumbs", choice=0, value="up"), "k")

    accepted = run(with_store(fresh_redis.url, go))
    fresh_redis.kill()
    fresh_redis.start()
    client = redis.Redis.from_url(fresh_redis.url)
    assert client.exists("tailor:completion:c1")
    assert [e[0].decode() for e in client.xrange(FEEDBACK_STREAM)] == [accepted.event_id]
    # and the idempotency key survived too: a retry after the crash is still a duplicate
    again = run(with_store(fresh_redis.url, go))
    assert again.duplicate
