"""Which user a learner trains next, and the lease that keeps it that learner's alone.

A user is ready with ``min_feedback`` pending examples (new feedback not yet trained
on). Ready users are served by priority = how long their oldest pending example has
waited × (1 + min(pending, PENDING_BOOST_CAP) / PENDING_BOOST_CAP): waiting time first,
so every ready user's turn comes; more pending feedback at most doubles it, so a user
who floods the stream gets their feedback in sooner but cannot starve the rest. (By
pending count alone, as before, one flooding user was first after every update of
theirs.) The bound, with one worker, updates of one length and R ready users: whoever
is trained ahead of a user who has waited w had waited at least w/2 since their own
last update, so a user v going ahead of u again and again does so at times that at
least double, at most 2 + log2(w) times: a ready user waits at most w updates where
w ≤ (R − 1)·(2 + log2 w), i.e. O(R log R) (about 190 for R = 21; strictly by waiting
time it would be R − 1; W workers share it out).

A worker takes a user with a lease: redis-py's ``Lock`` on the user's lease key, with
an expiry, taken without waiting. If the worker dies, the lease expires and another
worker takes the user over. Renewing and releasing check the lease's token, so a
worker whose lease already expired cannot renew it or release someone else's.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from contracts.keys import PENDING_KEY, PENDING_SINCE_KEY, lease_key

PENDING_BOOST_CAP = 64  # pending examples at which the boost to priority stops growing (×2)

# KEYS: pending zset, pending-since zset; ARGV: user, examples trained on, update start
_MARK_TRAINED = """
local left = tonumber(redis.call('ZINCRBY', KEYS[1], -tonumber(ARGV[2]), ARGV[1]))
if left <= 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return tostring(left)
"""


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
        self._mark_trained = client.register_script(_MARK_TRAINED)

    def candidates(self, limit: int = 20, now: float | None = None) -> list[str]:
        """Ready users (at least ``min_feedback`` pending examples), highest priority first
        (the module's docstring); ties go to the one with more pending."""
        ready = self.client.zrangebyscore(PENDING_KEY, self.min_feedback, "+inf",
                                          withscores=True)
        if not ready:
            return []
        now = time.time() if now is None else now
        users = [user for user, _ in ready]
        since = self.client.zmscore(PENDING_SINCE_KEY, users)
        unknown = {user: now for user, at in zip(users, since, strict=True) if at is None}
        if unknown:  # pending from before this key existed: waiting from now on
            self.client.zadd(PENDING_SINCE_KEY, unknown, nx=True)

        def priority(pending: float, at: float | None) -> float:
            waited = max(0.0, now - (now if at is None else at))
            return waited * (1.0 + min(pending, PENDING_BOOST_CAP) / PENDING_BOOST_CAP)

        ranked = sorted(zip(ready, since, strict=True),
                        key=lambda row: (-priority(row[0][1], row[1]), -row[0][1]))
        return [user.decode() for (user, _), _ in ranked[:limit]]

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
    def next_users(self, count: int, workers: int = 1) -> Iterator[list[tuple[str, str]]]:
        """Lease up to ``count`` of the neediest users nobody else is training, in priority
        order (one PPO batch), but no more than a ``workers``-th of those ready (rounded
        up): with several workers, each takes its share rather than one batching every
        ready user while the others wait. Yields (user, token) pairs, released afterwards."""
        leased: list[tuple[str, str]] = []
        try:
            ready = self.candidates(limit=max(20, 2 * count * workers))
            count = min(count, max(1, math.ceil(len(ready) / max(1, workers))))
            for user_id in ready:
                if len(leased) == count:
                    break
                token = self.try_lease(user_id)
                if token is not None:
                    leased.append((user_id, token))
            yield leased
        finally:
            for user_id, token in leased:
                self.release(user_id, token)

    def mark_trained(self, user_id: str, examples: int, started_at: float | None = None) -> None:
        """Take the examples an update used off the user's pending count. What is left
        came during the update (started at ``started_at``): it waits from then."""
        # One script: feedback applied between a separate ZINCRBY and ZREM was lost.
        self._mark_trained(keys=[PENDING_KEY, PENDING_SINCE_KEY],
                           args=[user_id, examples, time.time() if started_at is None
                                 else started_at])
