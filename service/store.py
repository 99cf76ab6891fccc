"""The Redis data model: completions, the feedback stream, per-user records.

Key layout (one place, so the service and the learners never disagree):

    tailor:completion:{completion_id}   hash, TTL: who asked, prompt, choices, features
    tailor:user:{user_id}               hash: feedback counters, adapter metrics
    tailor:user:{user_id}:completions   set of the user's completion ids (for forgetting)
    tailor:user:{user_id}:prompts       the user's recent prompts, token ids (PPO rollouts)
    tailor:users                        set of user ids seen
    tailor:feedback                     stream of accepted feedback events (consumer group)
    tailor:idem:{user_id}:{key}         stream id of an event already accepted under key
    tailor:adapter:{user_id}            hash: current adapter version pointer (adapters.py)
    tailor:forgotten:{user_id}          tombstone of a forgotten user (learners check it)
    tailor:adapter-updates              pub/sub channel: "{user_id} {version}" (no version: forgotten)

A feedback event is appended by one Lua script that checks the completion still
exists, checks the idempotency key, appends to the stream and bumps counters,
atomically: a retried request or a double click is recorded once, and an event
is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis

PREFIX = "tailor"
FEEDBACK_STREAM = f"{PREFIX}:feedback"
USERS_SET = f"{PREFIX}:users"
ADAPTER_CHANNEL = f"{PREFIX}:adapter-updates"
# Written by the learners, read by the Ingress's /metrics (learner_metrics.py):
LEARNER_STATS_KEY = f"{PREFIX}:learner:stats"  # hash: update outcomes, last update's numbers
FEEDBACK_LAG_KEY = f"{PREFIX}:learner:feedback-lag"  # list: seconds, newest first
LEARNER_RECENT_KEY = f"{PREFIX}:learner:recent"  # sorted set: user -> last update time
IDEMPOTENCY_TTL_S = 7 * 24 * 3600


def completion_key(completion_id: str) -> str:
    return f"{PREFIX}:completion:{completion_id}"


def user_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


def user_completions_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:completions"


def user_prompts_key(user_id: str) -> str:
    """The user's recent prompts (token ids, newest first): PPO's rollout prompts."""
    return f"{PREFIX}:user:{user_id}:prompts"


RECENT_PROMPTS = 200


def user_data_pattern(user_id: str) -> str:
    """Every per-user key the learners add (``tailor:user:{id}:*``)."""
    return f"{PREFIX}:user:{user_id}:*"


def idempotency_key(user_id: str, key: str) -> str:
    return f"{PREFIX}:idem:{user_id}:{key}"


def adapter_pointer_key(user_id: str) -> str:
    return f"{PREFIX}:adapter:{user_id}"


def forgotten_key(user_id: str) -> str:
    """When a user was forgotten: learners drop older events and updates begun before it."""
    return f"{PREFIX}:forgotten:{user_id}"


FORGOTTEN_TTL_S = 24 * 3600


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


@dataclass
class FeedbackEvent:
    user_id: str
    completion_id: str
    type: str  # "thumbs" | "ranking"
    choice: int | None = None  # thumbs: the rated choice
    value: str | None = None  # thumbs: "up" | "down"
    ranking: list[int] | None = None  # ranking: choice indices, best first
    comment: str | None = None
    accepted_at: float = field(default_factory=time.time)

    def content_key(self) -> str:
        """Default idempotency key: the same judgment sent twice is recorded once."""
        body = json.dumps(
            [self.completion_id, self.type, self.choice, self.value, self.ranking, self.comment]
        )
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
            accepted_at=float(text["accepted_at"]),
        )

    @property
    def counter_field(self) -> str:
        return f"thumbs_{self.value}" if self.type == "thumbs" else "rankings"


# KEYS: completion, idempotency, stream, user hash, users set
# ARGV: idempotency ttl, counter field, user id, then stream field/value pairs
_APPEND_FEEDBACK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local existing = redis.call('GET', KEYS[2])
if existing then return {0, existing} end
local id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
redis.call('HINCRBY', KEYS[4], 'feedback_events', 1)
redis.call('SADD', KEYS[5], ARGV[3])
return {1, id}
"""


class CompletionExpired(LookupError):
    """The completion is unknown, expired, or was forgotten."""


@dataclass
class AppendResult:
    event_id: str
    duplicate: bool


class FeedbackStore:
    """Async access to completions and feedback for the online path."""

    def __init__(self, client: aioredis.Redis, completion_ttl_s: int) -> None:
        self.client = client
        self.completion_ttl_s = completion_ttl_s
        self._append = client.register_script(_APPEND_FEEDBACK)

    @classmethod
    def from_url(cls, url: str, completion_ttl_s: int) -> FeedbackStore:
        return cls(aioredis.Redis.from_url(url), completion_ttl_s)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def save_completion(self, record: CompletionRecord) -> None:
        key = completion_key(record.completion_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record.to_redis())
            pipe.expire(key, self.completion_ttl_s)
            if record.user_id:
                index = user_completions_key(record.user_id)
                pipe.sadd(index, record.completion_id)
                pipe.expire(index, self.completion_ttl_s)
                pipe.sadd(USERS_SET, record.user_id)
                pipe.hsetnx(user_key(record.user_id), "first_seen", f"{record.created:.3f}")
                prompts = user_prompts_key(record.user_id)
                pipe.lpush(prompts, json.dumps(record.prompt_token_ids))
                pipe.ltrim(prompts, 0, RECENT_PROMPTS - 1)
            await pipe.execute()

    async def load_completion(self, completion_id: str) -> CompletionRecord:
        raw = await self.client.hgetall(completion_key(completion_id))
        if not raw:
            raise CompletionExpired(completion_id)
        return CompletionRecord.from_redis(completion_id, raw)

    async def append_feedback(self, event: FeedbackEvent, idempotency: str | None) -> AppendResult:
        """Append ``event`` to the stream once per idempotency key; returns its stream id."""
        key = idempotency or event.content_key()
        fields = event.to_stream(key)
        flat = [item for pair in fields.items() for item in pair]
        status, event_id = await self._append(
            keys=[
                completion_key(event.completion_id),
                idempotency_key(event.user_id, key),
                FEEDBACK_STREAM,
                user_key(event.user_id),
                USERS_SET,
            ],
            args=[IDEMPOTENCY_TTL_S, event.counter_field, event.user_id, *flat],
        )
        if status == -1:
            raise CompletionExpired(event.completion_id)
        event_id = event_id.decode() if isinstance(event_id, bytes) else event_id
        return AppendResult(event_id=event_id, duplicate=status == 0)

    async def adapter_version(self, user_id: str) -> str | None:
        version = await self.client.hget(adapter_pointer_key(user_id), "version")
        return version.decode() if version else None

    async def user_summary(self, user_id: str) -> dict[str, str] | None:
        raw = await self.client.hgetall(user_key(user_id))
        known = await self.client.sismember(USERS_SET, user_id)
        if not raw and not known:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def forget_user(self, user_id: str) -> int:
        """Delete everything Tailor holds on ``user_id`` in Redis; returns keys deleted.

        Feedback events already in the stream are deleted too (XDEL), so a
        learner that has not consumed them yet never trains on them.
        """
        deleted = 0
        completion_ids = await self.client.smembers(user_completions_key(user_id))
        keys = [completion_key(cid.decode()) for cid in completion_ids]
        keys += [user_key(user_id), adapter_pointer_key(user_id)]
        for pattern in (user_data_pattern(user_id), idempotency_key(user_id, "*")):
            keys += [k async for k in self.client.scan_iter(match=pattern, count=500)]
        if keys:
            deleted += await self.client.delete(*keys)
        stream_ids = [
            entry_id
            async for entry_id in self._stream_ids_of(user_id)
        ]
        if stream_ids:
            await self.client.xdel(FEEDBACK_STREAM, *stream_ids)
        await self.client.srem(USERS_SET, user_id)
        await self.client.zrem(LEARNER_RECENT_KEY, user_id)
        await self.client.set(forgotten_key(user_id), f"{time.time():.3f}", ex=FORGOTTEN_TTL_S)
        await self.client.publish(ADAPTER_CHANNEL, f"{user_id} ")  # replicas drop its adapters
        return deleted + len(stream_ids)

    async def _stream_ids_of(self, user_id: str):
        start = "-"
        while True:
            entries = await self.client.xrange(FEEDBACK_STREAM, min=start, count=1000)
            if not entries:
                return
            for entry_id, fields in entries:
                if fields.get(b"user_id", b"").decode() == user_id:
                    yield entry_id
            last = entries[-1][0].decode()
            start = "(" + last
            if len(entries) < 1000:
                return
