"""Every Redis key and channel Tailor uses, in one place.

The service writes some and the learners others; both build the names here,
so the two halves never disagree on where a thing lives.

    tailor:completion:{completion_id}    hash, TTL: who asked, prompt, choices, features
    tailor:users                         set of user ids seen
    tailor:user:{user_id}                hash: feedback counters, adapter metrics
    tailor:user:{user_id}:completions    set of the user's completion ids (for forgetting)
    tailor:user:{user_id}:prompts        the user's recent prompts, token ids (PPO rollouts)
    tailor:user:{user_id}:history        hash: hour (unix seconds) -> judgments accepted in it
    tailor:user:{user_id}:openwebui:{id}  completion id of an Open WebUI message, TTL (its ratings)
    tailor:user:{user_id}:examples       list of training examples, in the order applied
    tailor:user:{user_id}:applied        set of feedback event ids already applied
    tailor:user:{user_id}:value_head     the PPO value head of the user's adapter
    tailor:user:{user_id}:reward-sketch  the user's reward and its uncertainty (comparisons)
    tailor:idem:{user_id}:{key}          stream id of an event already accepted under key
    tailor:adapter:{user_id}             hash: the user's current adapter version pointer
    tailor:forgotten:{user_id}           tombstone of a forgotten user (learners check it)
    tailor:feedback                      stream of accepted feedback events (group "learners")
    tailor:adapter-updates               pub/sub: "{user_id} {version}" (no version: forgotten)
    tailor:learner:stats                 hash: update outcomes, the last update's numbers
    tailor:learner:feedback-lag          list: seconds from acceptance to publish, newest first
    tailor:learner:recent                sorted set: user -> time of their last update
    tailor:learner:pending               sorted set: user -> examples not yet trained on
    tailor:learner:pending-since         sorted set: user -> when their oldest pending example came
    tailor:learner:refine                sorted set: user -> when their last update ended
    tailor:learner:shared-heads          hash: the shared harmless/honest heads' numbers
    tailor:learner:shared-heads:weights  the heads themselves (safetensors, one layer each)
    tailor:learner:safety-start          hash: the adapter every user starts from (tensors, version)
    tailor:learner:safety-start:lock     the worker training it
    tailor:learner:lease:{user_id}       one worker's lease on training the user
    tailor:learner:worker:{worker_id}    hash: what a learner worker is doing

Every per-user key but the idempotency keys, the pointer and the tombstone is
under ``tailor:user:{user_id}``, so forgetting a user finds them with one pattern.
"""

from __future__ import annotations

PREFIX = "tailor"

FEEDBACK_STREAM = f"{PREFIX}:feedback"
FEEDBACK_GROUP = "learners"  # the learners' consumer group on FEEDBACK_STREAM
USERS_SET = f"{PREFIX}:users"
ADAPTER_CHANNEL = f"{PREFIX}:adapter-updates"

# Written by the learners, read by the Ingress's /metrics and by `tailor demo`.
LEARNER_STATS_KEY = f"{PREFIX}:learner:stats"
FEEDBACK_LAG_KEY = f"{PREFIX}:learner:feedback-lag"
LEARNER_RECENT_KEY = f"{PREFIX}:learner:recent"
PENDING_KEY = f"{PREFIX}:learner:pending"
PENDING_SINCE_KEY = f"{PREFIX}:learner:pending-since"
REFINE_KEY = f"{PREFIX}:learner:refine"
SHARED_HEADS_KEY = f"{PREFIX}:learner:shared-heads"
SHARED_HEADS_WEIGHTS_KEY = f"{SHARED_HEADS_KEY}:weights"
# v2: tensors named as peft saves an adapter (no adapter name); v1 blobs are retrained
SAFETY_START_KEY = f"{PREFIX}:learner:safety-start:v2"
SAFETY_START_LOCK_KEY = f"{SAFETY_START_KEY}:lock"

IDEMPOTENCY_TTL_S = 7 * 24 * 3600
FORGOTTEN_TTL_S = 24 * 3600
RECENT_PROMPTS = 200  # prompts kept per user for PPO rollouts


def completion_key(completion_id: str) -> str:
    return f"{PREFIX}:completion:{completion_id}"


def user_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


def user_data_pattern(user_id: str) -> str:
    """Every ``tailor:user:{id}:*`` key (completions index, prompts, training data)."""
    return f"{PREFIX}:user:{user_id}:*"


def user_completions_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:completions"


def user_prompts_key(user_id: str) -> str:
    """The user's recent prompts (token ids, newest first): PPO's rollout prompts."""
    return f"{PREFIX}:user:{user_id}:prompts"


def openwebui_message_key(user_id: str, message_id: str) -> str:
    """The completion that answered one of the user's Open WebUI messages (its id there).

    Open WebUI's ratings name the message, not the completion; under the user's own
    prefix, so forgetting the user deletes it and a user can only reach their own.
    """
    return f"{PREFIX}:user:{user_id}:openwebui:{message_id}"


def user_history_key(user_id: str) -> str:
    """Judgments the user gave per hour: field = the hour's start (unix seconds)."""
    return f"{PREFIX}:user:{user_id}:history"


def examples_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:examples"


def applied_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:applied"


def value_head_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:value_head"


def reward_sketch_key(user_id: str) -> str:
    """The learners' reward of the user with its uncertainty (contracts.reward_sketch)."""
    return f"{PREFIX}:user:{user_id}:reward-sketch"


def gold_answers_key(user_id: str) -> str:
    """The user's answers to gold checks (a hash: check id -> JSON ``GoldAnswer``)."""
    return f"{PREFIX}:user:{user_id}:gold"


def idempotency_key(user_id: str, key: str) -> str:
    return f"{PREFIX}:idem:{user_id}:{key}"


def adapter_pointer_key(user_id: str) -> str:
    return f"{PREFIX}:adapter:{user_id}"


def forgotten_key(user_id: str) -> str:
    """When a user was forgotten: learners drop older events and updates begun before it."""
    return f"{PREFIX}:forgotten:{user_id}"


def lease_key(user_id: str) -> str:
    return f"{PREFIX}:learner:lease:{user_id}"


def worker_status_key(worker_id: str) -> str:
    return f"{PREFIX}:learner:worker:{worker_id}"
