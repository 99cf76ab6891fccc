"""Which user a learner trains next, and the lease that keeps it that learner's alone.

Users are ranked by pending examples (new feedback not yet trained on); a user
needs ``min_feedback`` of them. A worker takes a user with a lease: redis-py's
``Lock`` on the user's lease key, with an expiry, taken without waiting. If the
worker dies, the lease expires and another worker takes the user over.
Renewing and releasing check the lease's token, so a worker whose lease already
expired cannot renew it or release someone else's.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from contracts.keys import PENDING_KEY, lease_key


class LeaseLost(RuntimeError):
    """The lease expired (the update took longer than the lease): do not publish."""


class UpdateAbandoned(LeaseLost):
    """The worker is shutting down and its drain time is up: drop the update, free the user."""


class Scheduler:
    def __init__(self, client: redis.Redis, min_feedback: int, lease_s: int) -> None:
        self.client = client
        self.min_feedback = min_feedback
        self.lease_s = lease_s
        # The leases this worker holds, by (user, token): a Lock keeps its token itself,
        # while the update is handed the token and passes it back to renew.
        self._held: dict[tuple[str, str], Lock] = {}
        # Set at shutdown once the drain time is up: the update in progress ends at its
        # next renewal (between PPO iterations) and its lease is released at once,
        # rather than left to expire learner_lease_s later.
        self.abandoning = threading.Event()

    def candidates(self, limit: int = 20) -> list[str]:
        """Users with at least ``min_feedback`` pending examples, most pending first."""
        users = self.client.zrevrangebyscore(
            PENDING_KEY, "+inf", self.min_feedback, start=0, num=limit
        )
        return [u.decode() for u in users]

    def try_lease(self, user_id: str) -> str | None:
        """The token of a new lease on ``user_id``; None if another worker holds one."""
        # Not thread-local: the lease belongs to the worker, whichever thread renews it.
        lease = self.client.lock(lease_key(user_id), timeout=self.lease_s, thread_local=False)
        token = uuid.uuid4().hex
        if not lease.acquire(blocking=False, token=token):
            return None
        self._held[(user_id, token)] = lease
        return token

    def renew(self, user_id: str, token: str) -> None:
        """Reset the lease's expiry to ``lease_s``; ``LeaseLost`` if it is no longer ours,
        ``UpdateAbandoned`` if the worker is shutting down."""
        if self.abandoning.is_set():
            raise UpdateAbandoned(user_id)
        lease = self._held.get((user_id, token))
        if lease is None:
            raise LeaseLost(user_id)
        try:
            lease.reacquire()
        except LockNotOwnedError:
            raise LeaseLost(user_id) from None

    def release(self, user_id: str, token: str) -> None:
        """End the lease if it is still ours; an expired one may be another worker's now."""
        lease = self._held.pop((user_id, token), None)
        if lease is None:
            return
        try:
            lease.release()
        except LockNotOwnedError:
            pass  # expired: nothing of ours to release

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
