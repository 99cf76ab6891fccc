"""Which user a learner trains next, and the lease that keeps it that learner's alone.

Users are ranked by pending examples (new feedback not yet trained on); a user
needs ``min_feedback`` of them. A worker takes a user by setting a lease key
with ``NX`` and an expiry: if the worker dies, the lease expires and another
worker takes the user over. Releasing and renewing check the lease's token, so
a worker whose lease already expired cannot release someone else's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from contracts.keys import PENDING_KEY, lease_key

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class LeaseLost(RuntimeError):
    """The lease expired (the update took longer than the lease): do not publish."""


class Scheduler:
    def __init__(self, client: redis.Redis, min_feedback: int, lease_s: int) -> None:
        self.client = client
        self.min_feedback = min_feedback
        self.lease_ms = lease_s * 1000
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    def candidates(self, limit: int = 20) -> list[str]:
        """Users with at least ``min_feedback`` pending examples, most pending first."""
        users = self.client.zrevrangebyscore(
            PENDING_KEY, "+inf", self.min_feedback, start=0, num=limit
        )
        return [u.decode() for u in users]

    def try_lease(self, user_id: str) -> str | None:
        token = uuid.uuid4().hex
        if self.client.set(lease_key(user_id), token, nx=True, px=self.lease_ms):
            return token
        return None

    def renew(self, user_id: str, token: str) -> None:
        if not self._renew(keys=[lease_key(user_id)], args=[token, self.lease_ms]):
            raise LeaseLost(user_id)

    def release(self, user_id: str, token: str) -> None:
        self._release(keys=[lease_key(user_id)], args=[token])

    @contextmanager
    def next_user(self) -> Iterator[tuple[str, str] | None]:
        """Lease the neediest user nobody else is training; yields (user, token) or None."""
        for user_id in self.candidates():
            token = self.try_lease(user_id)
            if token is not None:
                try:
                    yield user_id, token
                finally:
                    self.release(user_id, token)
                return
        yield None

    def mark_trained(self, user_id: str, examples: int) -> None:
        """Take the examples an update used off the user's pending count."""
        remaining = self.client.zincrby(PENDING_KEY, -examples, user_id)
        if remaining <= 0:
            self.client.zrem(PENDING_KEY, user_id)
