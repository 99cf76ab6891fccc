"""A worker's recently trained users, kept so a returning user is not rebuilt from the store.

An update starts from the user's published adapter and value head. Without this, every
update read them back: the adapter's files from the adapter store (a file or object
read and a safetensors parse) and the value head from Redis, although the same worker
had published them minutes before. The cache holds, per user, the published version's
LoRA tensors and value head (on the host), bounded, least recently trained evicted
first. An entry is used only for the version still published: if another worker
published a newer one since, it is a miss and the store is read. A forgotten user's
entry is dropped at the worker's next update (``drop_forgotten``): nothing of theirs
stays in a learner's memory after the service forgot them.

Not kept: the optimizer's state. Each update starts Adam afresh, as an update from the
store does, so a hit trains exactly as a miss would (the reward model behind it is
refitted each update anyway, so stale moments would push along an old reward's slope).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class UserState:
    version: str  # the published version these tensors are
    lora: dict[str, torch.Tensor]  # the policy's LoRA parameters, by state-dict name
    value_head: dict[str, torch.Tensor]
    kept_at: float = field(default_factory=time.time)


class UserStateCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, UserState] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def get(self, user_id: str, version: str) -> UserState | None:
        """The user's state if it is of ``version`` (the one published now)."""
        state = self._states.get(user_id)
        if state is None or state.version != version:
            self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end(user_id)
        return state

    def put(self, user_id: str, state: UserState) -> None:
        if self.capacity == 0:
            return
        self._states[user_id] = state
        self._states.move_to_end(user_id)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)
            self.evictions += 1

    def drop(self, user_id: str) -> None:
        """Forget the user (no adapter published any more: forgotten)."""
        self._states.pop(user_id, None)

    def drop_forgotten(self, forgotten_at: dict[str, float]) -> None:
        """Drop the users forgotten (their tombstone's time) after their state was kept."""
        for user_id, at in forgotten_at.items():
            state = self._states.get(user_id)
            if state is not None and at >= state.kept_at:
                del self._states[user_id]

    def users(self) -> list[str]:
        """Kept users, least recently trained first."""
        return list(self._states)
