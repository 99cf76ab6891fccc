"""The online path's access to Redis: completions, feedback intake, forgetting a user.

A feedback event is appended by one Lua script that checks the completion still
exists, checks the idempotency key, appends to the stream and bumps counters,
atomically: a retried request or a double click is recorded once, and an event
is never half-written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from safetensors import SafetensorError

from contracts.gold_checks import GoldAnswer
from contracts.keys import (
    ADAPTER_CHANNEL,
    FEEDBACK_STREAM,
    FORGOTTEN_TTL_S,
    IDEMPOTENCY_TTL_S,
    LEARNER_RECENT_KEY,
    RECENT_PROMPTS,
    USERS_SET,
    adapter_pointer_key,
    completion_key,
    forgotten_key,
    gold_answers_key,
    idempotency_key,
    openwebui_message_key,
    reward_sketch_key,
    user_completions_key,
    user_data_pattern,
    user_history_key,
    user_key,
    user_prompts_key,
)
from contracts.records import CompletionRecord, FeedbackEvent
from contracts.reward_sketch import RewardSketch

log = logging.getLogger(__name__)

# KEYS: completion, idempotency, stream, user hash, users set, user history
# ARGV: idempotency ttl, counter field, user id, criterion counter field, history hour,
# then stream field/value pairs
_APPEND_FEEDBACK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local existing = redis.call('GET', KEYS[2])
if existing then return {0, existing} end
local id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, 6))
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
redis.call('HINCRBY', KEYS[4], 'feedback_events', 1)
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[5], 1)
return {1, id}
"""
# KEYS: the user's gold answers, users set, user hash; ARGV: check id, answer JSON, user id.
# The first answer to a check stands; a repeat changes nothing.
_RECORD_GOLD_ANSWER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], 'gold_checks_answered', 1)
return 1
"""

HOUR_S = 3600


class CompletionExpired(LookupError):
    """The completion is unknown, expired, or was forgotten."""


@dataclass
class AppendResult:
    event_id: str
    duplicate: bool


# Connections of one Ingress replica to Redis; each command holds one only while it runs.
REDIS_MAX_CONNECTIONS = 64


class FeedbackStore:
    """Async access to completions and feedback for the online path."""

    def __init__(self, client: aioredis.Redis, completion_ttl_s: int) -> None:
        self.client = client
        self.completion_ttl_s = completion_ttl_s
        self._append = client.register_script(_APPEND_FEEDBACK)
        self._record_gold = client.register_script(_RECORD_GOLD_ANSWER)

    @classmethod
    def from_url(cls, url: str, completion_ttl_s: int, timeout_s: float = 5.0) -> FeedbackStore:
        """``timeout_s`` bounds connecting and each command: a Redis that hangs is
        answered as one that is down (503), not by a request that never returns."""
        # A blocking pool: in a burst, a request beyond max_connections waits (at most
        # timeout_s) for a free connection. redis-py's default pool raises "Too many
        # connections" at once instead, which answered a burst of 240 chat requests with
        # 129 503s "Redis unreachable" while Redis was fine (`tailor check-faults`).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=timeout_s,
            socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        return cls(aioredis.Redis(connection_pool=pool), completion_ttl_s)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def save_completion(
        self, record: CompletionRecord, openwebui_message_id: str | None = None
    ) -> None:
        """Keep ``record`` for rating; ``openwebui_message_id``: the Open WebUI message it
        answered (its ratings name the message), kept as long as the completion."""
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
                if openwebui_message_id:
                    pipe.set(openwebui_message_key(record.user_id, openwebui_message_id),
                             record.completion_id, ex=self.completion_ttl_s)
            await pipe.execute()

    async def openwebui_completion(self, user_id: str, message_id: str) -> str | None:
        """The completion id that answered the user's Open WebUI message, if still kept."""
        completion_id = await self.client.get(openwebui_message_key(user_id, message_id))
        return completion_id.decode() if completion_id else None

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
                user_history_key(event.user_id),
            ],
            args=[IDEMPOTENCY_TTL_S, event.counter_field, event.user_id, event.criterion_field,
                  int(event.accepted_at // HOUR_S * HOUR_S), *flat],
        )
        if status == -1:
            raise CompletionExpired(event.completion_id)
        event_id = event_id.decode() if isinstance(event_id, bytes) else event_id
        return AppendResult(event_id=event_id, duplicate=status == 0)

    async def adapter_version(self, user_id: str) -> str | None:
        version = await self.client.hget(adapter_pointer_key(user_id), "version")
        return version.decode() if version else None

    async def reward_sketch(self, user_id: str) -> RewardSketch | None:
        """The learners' reward of the user with its uncertainty; None before their first
        update, or when what is stored cannot be read (logged: plain samples then)."""
        blob = await self.client.get(reward_sketch_key(user_id))
        if blob is None:
            return None
        try:
            return RewardSketch.from_bytes(blob)
        except (ValueError, SafetensorError) as err:
            log.warning("reward sketch of %s unreadable, comparing plain samples: %s",
                        user_id, err)
            return None

    async def user_summary(self, user_id: str) -> dict[str, str] | None:
        raw = await self.client.hgetall(user_key(user_id))
        known = await self.client.sismember(USERS_SET, user_id)
        if not raw and not known:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def user_history(self, user_id: str) -> dict[int, int]:
        """Judgments the user gave per hour (the hour's start, unix seconds), oldest first."""
        raw = await self.client.hgetall(user_history_key(user_id))
        return dict(sorted((int(hour), int(count)) for hour, count in raw.items()))

    async def gold_answered(self, user_id: str) -> set[str]:
        """The ids of the gold checks ``user_id`` answered."""
        return {k.decode() for k in await self.client.hkeys(gold_answers_key(user_id))}

    async def record_gold_answer(self, user_id: str, answer: GoldAnswer) -> bool:
        """Keep the user's first answer to a check; False if they had answered it."""
        recorded = await self._record_gold(
            keys=[gold_answers_key(user_id), USERS_SET, user_key(user_id)],
            args=[answer.check_id, answer.to_json(), user_id])
        return bool(recorded)

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
